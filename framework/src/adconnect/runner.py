"""The runner process (``adconnect run``): heartbeat, leader election, schedules and a queue worker.

Several runners may share one database. Each one:

* keeps a heartbeat row (``runner_heartbeats``) so operators and other replicas see it is alive;
* works the job queue: a procrastinate worker (``ADCONNECT_WORKER_CONCURRENCY`` jobs at once) runs
  the sync jobs any replica's leader queued (:mod:`adconnect.scheduling.worker`);
* competes for leadership every ``ADCONNECT_LEADER_POLL_SECONDS``: the holder of the leader lock
  (:mod:`adconnect.scheduling.leader`) runs APScheduler with every tenant's schedules
  (:mod:`adconnect.scheduling.scheduler`), catches up fires a dead leader missed and recovers the
  jobs of dead workers.

Ctrl-C or SIGTERM stops it cleanly: it steps down (releasing the lock at once), lets the running
sync jobs finish (a second Ctrl-C abandons them: they run again on another replica, which is
safe because every chunk commits its rows and state together) and removes its heartbeat row.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
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
from adconnect.scheduling.leader import LeaderLock
from adconnect.scheduling.queue import TaskContext, install_task_context, make_queue_app, queue_conninfo
from adconnect.scheduling.scheduler import SyncScheduler
from adconnect.scheduling.worker import QueueWorker
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
        self.leader_lock = LeaderLock(
            queue_conninfo(db.app_url, application_name="adconnect-leader"), self.instance_id
        )
        self.sync_scheduler: SyncScheduler | None = None
        self.queue: QueueWorker | None = None
        self._leadership = threading.Lock()
        self._stopping = False
        self._abandon = threading.Event()

    # --- heartbeat -------------------------------------------------------------------------

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
            "heartbeat %d: %d tenant(s), %d provider(s) installed; %s, %d sync job(s) running",
            self.beats,
            tenant_count,
            len(self.host.provider_ids()),
            "leader" if self.sync_scheduler is not None else "standby",
            self.queue.running_jobs if self.queue is not None else 0,
        )

    # --- leadership ------------------------------------------------------------------------

    def lead(self) -> None:
        """Become the leader when the lock is free; step down when it is no longer held."""
        with self._leadership:
            if self._stopping:
                return
            if self.sync_scheduler is None:
                if self.leader_lock.try_acquire():
                    self._become_leader()
            elif not self.leader_lock.still_held():
                self._step_down("the leader lock was lost")

    def _become_leader(self) -> None:
        assert self.queue is not None
        log.info("runner %s became the leader: scheduling syncs", self.instance_id)
        scheduler = SyncScheduler(self.settings, self.db, self.host, self.queue)
        try:
            report = scheduler.start()
        except Exception:
            log.exception("could not start scheduling; giving the leadership up")
            scheduler.stop()
            self.leader_lock.release()
            return
        self.sync_scheduler = scheduler
        log.info(
            "scheduling %d sync job(s) (%d missed fire(s) caught up)",
            len(scheduler.next_runs()),
            report.caught_up,
        )

    def _step_down(self, reason: str) -> None:
        if self.sync_scheduler is not None:
            self.sync_scheduler.stop()
            self.sync_scheduler = None
            log.info("runner %s is no longer the leader: %s", self.instance_id, reason)
        self.leader_lock.release()

    # --- the process -----------------------------------------------------------------------

    def _start_queue(self) -> QueueWorker:
        s = self.settings
        install_task_context(TaskContext.build(s, self.db, self.host))
        conninfo = queue_conninfo(self.db.app_url, application_name=f"adconnect-worker {self.instance_id}")
        queue = QueueWorker(
            make_queue_app(conninfo, max_connections=s.worker_concurrency + 4),
            self.db,
            name=self.instance_id,
            concurrency=s.worker_concurrency,
            heartbeat_seconds=s.worker_heartbeat_seconds,
            stalled_seconds=s.stalled_worker_seconds,
            poll_seconds=s.worker_poll_seconds,
        )
        queue.start()
        log.info("queue worker started (%d at a time)", s.worker_concurrency)
        return queue

    def run_forever(self) -> None:
        """Run until Ctrl-C or SIGTERM, then stop cleanly and remove this instance's heartbeat row."""
        now = datetime.now(UTC)
        self.scheduler.add_job(
            self.heartbeat,
            "interval",
            id="heartbeat",
            seconds=self.settings.heartbeat_seconds,
            next_run_time=now,
        )
        self.scheduler.add_job(
            self.lead, "interval", id="lead", seconds=self.settings.leader_poll_seconds, next_run_time=now
        )

        def _terminate(signum: int, frame: FrameType | None) -> None:
            log.info("received signal %d, stopping", signum)
            self.scheduler.shutdown(wait=False)

        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            self.queue = self._start_queue()
            self.scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            log.info("interrupted, stopping")
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
        finally:
            try:
                self._shutdown()
            finally:
                signal.signal(signal.SIGTERM, previous)
                install_task_context(None)
                with self.db.platform() as conn:
                    conn.execute(
                        delete(runner_heartbeats).where(runner_heartbeats.c.instance_id == self.instance_id)
                    )

    def _shutdown(self) -> None:
        def _abandon(signum: int, frame: FrameType | None) -> None:
            self._abandon.set()

        # from here on, a second Ctrl-C or SIGTERM abandons the running jobs instead of interrupting
        previous = signal.signal(signal.SIGINT, _abandon), signal.signal(signal.SIGTERM, _abandon)
        try:
            with self._leadership:
                self._stopping = True
                self._step_down("stopping")
            queue = self.queue
            if queue is None:
                return
            queue.stop()
            if queue.join(0.5):
                return
            log.info(
                "waiting for %d running sync job(s) to finish; Ctrl-C again abandons them "
                "(another runner runs them again)",
                queue.running_jobs,
            )
            while not queue.join(0.2):
                if self._abandon.is_set():
                    self._exit_abandoning(queue)
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])

    def _exit_abandoning(self, queue: QueueWorker) -> None:
        """Leave now: running jobs stay claimed until their heartbeat goes stale, then run again."""
        log.warning(
            "abandoning %d running sync job(s); they run again once this worker is presumed dead",
            queue.running_jobs,
        )
        with self.db.platform() as conn:
            conn.execute(delete(runner_heartbeats).where(runner_heartbeats.c.instance_id == self.instance_id))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
