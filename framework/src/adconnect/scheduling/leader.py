"""Leader election: one PostgreSQL session advisory lock, held by at most one runner.

APScheduler 3.x job stores must never be shared between schedulers, so exactly one replica - the
holder of :data:`LEADER_LOCK` - runs the schedules. The lock is a *session* lock on a dedicated
connection: PostgreSQL releases it the moment that session ends, so when the leader process dies
(even SIGKILL: the kernel closes its socket) a standby's next :meth:`LeaderLock.try_acquire`
succeeds, within ``ADCONNECT_LEADER_POLL_SECONDS``. TCP keepalives bound how long a leader that
vanished from the network keeps the lock; the leader also checks that it still holds it every poll
and steps down when it cannot tell.

The lock connection's ``application_name`` carries the runner's instance id, so
:func:`current_leader` can say which runner leads.
"""

from __future__ import annotations

import contextlib
import logging

import psycopg
from sqlalchemy import text

from adconnect.db.database import Database

__all__ = ["LEADER_LOCK", "LeaderLock", "current_leader"]

log = logging.getLogger(__name__)

#: The advisory lock id of the scheduler leader (one per database).
LEADER_LOCK = 0x0ADC5C4E
_APP_NAME_PREFIX = "adconnect-leader "
_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND classid = %(hi)s::bigint::oid AND objid = %(lo)s::bigint::oid "
    "AND objsubid = 1)"
)


def _split(key: int) -> dict[str, int]:
    return {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}


class LeaderLock:
    """The leader lock on its own connection (``conninfo``: the application role's)."""

    def __init__(self, conninfo: str, instance_id: str, *, key: int = LEADER_LOCK) -> None:
        self.conninfo = conninfo
        self.instance_id = instance_id
        self.key = key
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._holding = False

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=5,
                application_name=(_APP_NAME_PREFIX + self.instance_id)[:63],
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                options="-c statement_timeout=5000",
            )
        return self._conn

    @property
    def held(self) -> bool:
        """Whether this process believes it holds the lock (see :meth:`still_held`)."""
        return self._conn is not None and not self._conn.closed and self._holding

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it. Never blocks; False on any database trouble."""
        try:
            row = self._connect().execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.debug("leader lock unavailable: %s", exc)
            self._drop()
            return False
        self._holding = bool(row and row[0])
        return self._holding

    def still_held(self) -> bool:
        """Ask the server whether this session still holds the lock; False if it cannot tell."""
        if self._conn is None or not self._holding:
            return False
        try:
            row = self._conn.execute(_HELD, _split(self.key)).fetchone()
        except psycopg.Error as exc:
            log.warning("lost the leader lock's connection: %s", exc)
            self._drop()
            return False
        self._holding = bool(row and row[0])
        return self._holding

    def release(self) -> None:
        """Give the lock up (closing the session releases it in any case)."""
        if self._conn is not None and not self._conn.closed and self._holding:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._drop()

    def _drop(self) -> None:
        self._holding = False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def current_leader(db: Database, *, key: int = LEADER_LOCK) -> str | None:
    """The instance id of the runner holding the leader lock, if any (read as the admin role)."""
    with db.admin() as conn:
        name = conn.execute(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:hi AS bigint)::oid "
                "AND l.objid = CAST(:lo AS bigint)::oid AND l.objsubid = 1"
            ),
            _split(key),
        ).scalar()
    if not name:
        return None
    return str(name).removeprefix(_APP_NAME_PREFIX)
