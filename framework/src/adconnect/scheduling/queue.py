"""The job queue: procrastinate on the adconnect database, its schema, and the sync task.

The leader only decides *when* a sync is due; the work goes to procrastinate, which every runner
replica consumes. One job syncs one stream of one connection (task ``adconnect.sync_stream``)
and is deferred with ``lock`` and ``queueing_lock`` = ``"<connection_id>:<stream>"``: at most one
such job runs and at most one waits, so a fire while one is queued is coalesced into it.

Procrastinate's tables, functions and types live in the database's default schema
(:data:`QUEUE_SCHEMA`), created by :func:`ensure_queue_schema` from ``Database.migrate()`` as the
admin role; the application role gets exactly what the queue needs on them. Workers and
deferrers connect as the application role (:func:`queue_conninfo`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg.conninfo
from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.schema import SchemaManager
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from adconnect.connections import ConnectionService
from adconnect.db.database import Database
from adconnect.errors import AdconnectError, NotFoundError
from adconnect.plugins import PluginHost
from adconnect.settings import FrameworkSettings
from adconnect.sync.engine import StreamOptions, SyncEngine

__all__ = [
    "QUEUE_SCHEMA",
    "QUEUE_TABLES",
    "SYNC_TASK",
    "RetryableSyncError",
    "TaskContext",
    "defer_sync",
    "ensure_queue_schema",
    "install_task_context",
    "make_queue_app",
    "queue_conninfo",
    "queue_lock",
    "task_context",
]

log = logging.getLogger(__name__)

#: Where procrastinate's objects live: the database's default schema.
QUEUE_SCHEMA = "public"
QUEUE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)
SYNC_TASK = "adconnect.sync_stream"
#: A sync that failed on a transient provider error is tried again this many times in all...
RETRY_ATTEMPTS = 3
#: ... this long after the previous attempt (the engine already backed off within the run).
RETRY_WAIT_SECONDS = 300


# --- connecting ----------------------------------------------------------------------------


def queue_conninfo(url: URL, *, application_name: str = "adconnect") -> str:
    """A libpq connection string for ``url`` (a SQLAlchemy URL, Unix-socket ``?host=`` too)."""
    params: dict[str, Any] = {}
    for key, option in url.query.items():
        params[key] = option if isinstance(option, str) else option[0]
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("dbname", url.database),
        ("user", url.username),
        ("password", url.password),
    ):
        if value is not None:
            params[key] = str(value)
    params["application_name"] = application_name[:63]
    # procrastinate's SQL names its objects without a schema: pin the one they live in
    params["options"] = (params.get("options", "") + f" -c search_path={QUEUE_SCHEMA}").strip()
    return psycopg.conninfo.make_conninfo(**params)


# --- the schema ----------------------------------------------------------------------------


def ensure_queue_schema(conn: Connection, app_role: str) -> bool:
    """Create procrastinate's schema when absent, then (re)grant the application role.

    ``conn`` is an admin connection inside ``Database.migrate()`` (which holds the migration
    lock). Returns True when the schema was created.
    """
    created = False
    exists = conn.execute(
        text("SELECT to_regclass(:t)"), {"t": f"{QUEUE_SCHEMA}.procrastinate_jobs"}
    ).scalar()
    if exists is None:
        conn.execute(text(f"SET LOCAL search_path TO {QUEUE_SCHEMA}"))
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(SchemaManager.get_schema())  # several statements: no parameters, simple protocol
        created = True
        log.info("created the job queue schema (procrastinate) in %s", QUEUE_SCHEMA)
    role = conn.execute(text("SELECT quote_ident(:r)"), {"r": app_role}).scalar_one()
    objects = conn.execute(
        text(
            "SELECT c.relkind::text AS kind, quote_ident(c.relname) AS name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname LIKE 'procrastinate%' AND c.relkind IN ('r', 'S') "
            "UNION ALL SELECT 'f', p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :s AND p.proname LIKE 'procrastinate%' "
            "UNION ALL SELECT 't', quote_ident(t.typname) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = :s AND t.typname LIKE 'procrastinate%' AND t.typtype IN ('e', 'c') "
            "AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')"
        ),
        {"s": QUEUE_SCHEMA},
    ).all()
    conn.execute(text(f"GRANT USAGE ON SCHEMA {QUEUE_SCHEMA} TO {role}"))
    grants = {
        "r": "SELECT, INSERT, UPDATE, DELETE ON TABLE",
        "S": "USAGE, SELECT ON SEQUENCE",
        "f": "EXECUTE ON FUNCTION",
        "t": "USAGE ON TYPE",
    }
    for kind, name in objects:
        qualified = name if kind == "f" else f"{QUEUE_SCHEMA}.{name}"
        conn.execute(text(f"GRANT {grants[kind]} {qualified} TO {role}"))
    return created


# --- the app and the task ------------------------------------------------------------------


class RetryableSyncError(Exception):
    """A sync failed on a transient provider error: procrastinate runs the job again later."""


def queue_lock(connection_id: UUID | str, stream: str) -> str:
    """The ``lock`` and ``queueing_lock`` of one connection's stream."""
    return f"{connection_id}:{stream}"


def make_queue_app(conninfo: str, *, max_connections: int = 6) -> App:
    """A procrastinate app on ``conninfo`` with the sync task registered."""
    connector = PsycopgConnector(conninfo=conninfo, min_size=1, max_size=max(2, max_connections))
    app = App(connector=connector)
    app.task(
        name=SYNC_TASK,
        pass_context=True,
        retry=RetryStrategy(
            max_attempts=RETRY_ATTEMPTS - 1, wait=RETRY_WAIT_SECONDS, retry_exceptions={RetryableSyncError}
        ),
    )(sync_stream)
    return app


async def defer_sync(app: App, tenant_id: UUID, connection_id: UUID, stream: str, trigger: str) -> int | None:
    """Queue one stream sync; None when one is already waiting (the fire is coalesced into it)."""
    key = queue_lock(connection_id, stream)
    deferrer = app.configure_task(SYNC_TASK, lock=key, queueing_lock=key)
    try:
        return await deferrer.defer_async(
            tenant_id=str(tenant_id), connection_id=str(connection_id), stream=stream, trigger=trigger
        )
    except AlreadyEnqueued:
        return None


@dataclass(frozen=True)
class TaskContext:
    """What a sync task needs; built once per process."""

    settings: FrameworkSettings
    db: Database
    host: PluginHost
    service: ConnectionService
    engine: SyncEngine

    @classmethod
    def build(cls, settings: FrameworkSettings, db: Database, host: PluginHost) -> TaskContext:
        from adconnect.keyring import MasterKeyring
        from adconnect.quota import QuotaGovernor

        service = ConnectionService.create(db, host, MasterKeyring.from_settings(settings))
        return cls(settings, db, host, service, SyncEngine(db, host, QuotaGovernor(db)))

    @classmethod
    def from_environment(cls) -> TaskContext:
        """For a worker that is not ``adconnect run`` (settings from ``ADCONNECT_*``)."""
        from adconnect.db.database import open_database
        from adconnect.plugins import load_plugins

        settings = FrameworkSettings()
        host = load_plugins(disabled=settings.disabled_plugins, trace=settings.trace_plugins)
        return cls.build(settings, open_database(settings), host)


_context: list[TaskContext] = []
_context_lock = threading.Lock()


def install_task_context(context: TaskContext | None) -> None:
    """Make the tasks of this process use ``context`` (the runner's), or forget it (None)."""
    with _context_lock:
        _context.clear()
        if context is not None:
            _context.append(context)


def task_context() -> TaskContext:
    """This process's task context: the installed one, else one built from ``ADCONNECT_*``."""
    with _context_lock:
        if not _context:
            _context.append(TaskContext.from_environment())
        return _context[0]


def _skip(tenant_id: UUID, connection_id: UUID, stream: str, reason: str) -> dict[str, Any]:
    log.info("sync job %s.%s of tenant %s skipped: %s", connection_id, stream, tenant_id, reason)
    return {"stream": stream, "status": "skipped", "reason": reason}


def sync_stream(
    job_context: JobContext, *, tenant_id: str, connection_id: str, stream: str, trigger: str = "schedule"
) -> dict[str, Any]:
    """Sync one stream of one connection (the body of task ``adconnect.sync_stream``).

    Rechecks the connection first (it may have changed since the fire). A run that failed on a
    transient provider error raises :class:`RetryableSyncError`, so procrastinate retries it;
    re-auth, missing scopes and fatal errors are recorded by the engine and not retried.
    """
    ctx = task_context()
    tenant, connection = UUID(tenant_id), UUID(connection_id)
    try:
        record = ctx.service.get(tenant, connection)
    except NotFoundError:
        return _skip(tenant, connection, stream, "the connection no longer exists")
    if record.status != "active":
        return _skip(tenant, connection, stream, f"the connection is {record.status}")
    if record.external_account_id is None:
        return _skip(tenant, connection, stream, "no account is selected")
    job_id = f"procrastinate:{job_context.job.id}"
    try:
        results = ctx.engine.sync_connection(
            ctx.service,
            tenant,
            connection,
            streams=[stream],
            options=StreamOptions(trigger=trigger, job_id=job_id),
        )
    except AdconnectError as exc:  # disabled meanwhile, needs re-auth, unknown stream: not retried
        return _skip(tenant, connection, stream, exc.user_message)
    if not results:
        return _skip(tenant, connection, stream, "nothing to sync")
    result = results[0]
    summary = result.summary()
    log.info(
        "sync job %s finished: %s %s.%s %s, %d record(s) read in %.1fs%s",
        job_id,
        record.name,
        record.provider_id,
        stream,
        result.status,
        result.counts.records_read,
        result.duration_seconds,
        f" ({result.error_class}: {result.error_message})" if result.error_class else "",
    )
    if result.error_class == "RetryableProviderError":
        raise RetryableSyncError(f"{record.provider_id}.{stream}: {result.error_message}")
    return summary
