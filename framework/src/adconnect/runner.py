"""The runner process (``adconnect run``): APScheduler in the platform time zone.

Today it keeps a heartbeat row per runner instance so operators (and other replicas) can see
it is alive; the sync schedules of every enabled provider plug into the same scheduler.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from datetime import UTC, datetime
from types import FrameType
from zoneinfo import ZoneInfo

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

import adconnect
from adconnect.db.database import Database
from adconnect.db.schema import runner_heartbeats, tenants
from adconnect.plugins import PluginHost
from adconnect.settings import FrameworkSettings

__all__ = ["Runner"]

log = logging.getLogger(__name__)


class Runner:
    """One runner instance."""

    def __init__(self, settings: FrameworkSettings, db: Database, host: PluginHost) -> None:
        self.settings = settings
        self.db = db
        self.host = host
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.scheduler = BlockingScheduler(
            timezone=ZoneInfo(settings.timezone),
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self.beats = 0

    def heartbeat(self) -> None:
        """Record that this runner is alive and log what it sees."""
        with self.db.platform() as conn:
            conn.execute(
                insert(runner_heartbeats)
                .values(
                    instance_id=self.instance_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    version=adconnect.__version__,
                )
                .on_conflict_do_update(
                    index_elements=[runner_heartbeats.c.instance_id], set_={"last_seen_at": func.now()}
                )
            )
            tenant_count = conn.execute(select(func.count()).select_from(tenants)).scalar_one()
        self.beats += 1
        log.info(
            "heartbeat %d: %d tenant(s), %d provider(s) installed",
            self.beats,
            tenant_count,
            len(self.host.provider_ids()),
        )

    def run_forever(self) -> None:
        """Run until Ctrl-C or SIGTERM, then remove this instance's heartbeat row."""
        self.scheduler.add_job(
            self.heartbeat,
            "interval",
            id="heartbeat",
            seconds=self.settings.heartbeat_seconds,
            next_run_time=datetime.now(UTC),
        )

        def _terminate(signum: int, frame: FrameType | None) -> None:
            log.info("received signal %d, stopping", signum)
            self.scheduler.shutdown(wait=False)

        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            self.scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            log.info("interrupted, stopping")
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
        finally:
            signal.signal(signal.SIGTERM, previous)
            with self.db.platform() as conn:
                conn.execute(
                    delete(runner_heartbeats).where(runner_heartbeats.c.instance_id == self.instance_id)
                )
