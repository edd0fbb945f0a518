"""This process's side of the job queue: a procrastinate worker on an event loop of its own.

:class:`QueueWorker` runs one thread with an asyncio loop, opens the procrastinate app there and
runs a worker (sync tasks execute in the loop's thread pool, ``concurrency`` at a time). Other
threads - the leader's scheduler - reach the queue through :meth:`QueueWorker.call`, which runs
a coroutine on that loop, so one connection pool serves everything.

Crash recovery: the worker writes a heartbeat every ``heartbeat_seconds``. A worker silent for
``stalled_seconds`` is presumed dead (SIGKILL, power cut); :meth:`QueueWorker.recover_stalled`
(called periodically by the leader) marks the sync runs it left ``running`` as failed and puts its
jobs back in the queue. Re-running a job is safe: each chunk commits its rows and state together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar
from uuid import UUID

from procrastinate import App
from procrastinate.exceptions import UniqueViolation
from procrastinate.jobs import Job, Status
from procrastinate.worker import Worker
from sqlalchemy import func, update

from adconnect.db.database import Database
from adconnect.db.schema import sync_runs
from adconnect.scheduling.queue import SYNC_TASK, defer_sync

__all__ = ["QueueWorker"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueWorker:
    """The procrastinate app and worker of this process, on a dedicated event-loop thread.

    ``concurrency=0`` opens the app without a worker: the process only defers and recovers.
    """

    def __init__(
        self,
        app: App,
        db: Database,
        *,
        name: str,
        concurrency: int,
        heartbeat_seconds: float,
        stalled_seconds: float,
        poll_seconds: float,
    ) -> None:
        self.app = app
        self.db = db
        self.name = name
        self.concurrency = concurrency
        self.heartbeat_seconds = heartbeat_seconds
        self.stalled_seconds = stalled_seconds
        self.poll_seconds = poll_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stopping = False
        self._worker: Worker | None = None
        self._stopped: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Open the queue and start working; returns once the app is open."""
        self._thread = threading.Thread(target=self._thread_main, name="adconnect-queue", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the job queue did not open in time")
        if self._failed is not None:
            raise self._failed

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() or logged
            self._failed = exc
            self._ready.set()
            if not self._stopping:
                log.exception("the job queue thread failed")

    async def _main(self) -> None:
        stopped = self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with self.app.open_async():
            self._ready.set()
            if self.concurrency == 0:  # defers and recovery only
                await stopped.wait()
            while not self._stopping:
                self._worker = Worker(
                    self.app,
                    name=self.name,
                    concurrency=self.concurrency,
                    install_signal_handlers=False,
                    update_heartbeat_interval=self.heartbeat_seconds,
                    stalled_worker_timeout=self.stalled_seconds,
                    fetch_job_polling_interval=self.poll_seconds,
                    abort_job_polling_interval=self.poll_seconds,
                    delete_jobs="successful",
                )
                try:
                    await self._worker.run()  # type: ignore[no-untyped-call]
                except Exception:
                    log.exception("the queue worker stopped on an error; restarting it")
                if not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopped.wait(), 1)

    @property
    def running_jobs(self) -> int:
        worker = self._worker
        return len(worker._running_jobs) if worker is not None else 0

    def stop(self) -> None:
        """Stop taking jobs; the thread ends once the running jobs have finished."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopping = True
            return

        def _stop() -> None:
            self._stopping = True
            if self._stopped is not None:
                self._stopped.set()
            if self._worker is not None:
                self._worker.stop()  # type: ignore[no-untyped-call]

        try:
            loop.call_soon_threadsafe(_stop)
        except RuntimeError:  # the loop just closed
            self._stopping = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- used by the leader ----------------------------------------------------------------

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        """Run ``make()`` on the queue's loop and wait for its result."""
        loop = self._loop
        if loop is None or self._stopping:
            raise RuntimeError("the job queue is not running")

        async def run() -> T:
            return await make()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(timeout)

    def defer(self, tenant_id: UUID, connection_id: UUID, stream: str, trigger: str) -> int | None:
        """Queue one stream sync; None when one is already waiting (coalesced)."""
        return self.call(lambda: defer_sync(self.app, tenant_id, connection_id, stream, trigger))

    def recover_stalled(self) -> list[int]:
        """Put the jobs of workers presumed dead back in the queue; return their ids."""
        return self.call(self._recover)

    async def _recover(self) -> list[int]:
        manager = self.app.job_manager
        await manager.prune_stalled_workers(self.stalled_seconds)
        recovered: list[int] = []
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=self.stalled_seconds):
            assert job.id is not None
            if job.task_name == SYNC_TASK:
                await asyncio.to_thread(self._mark_runs_abandoned, job)
            try:
                await manager.retry_job(job)
                log.info("job %s (%s) was left by a dead worker: queued again", job.id, job.call_string)
            except UniqueViolation:
                # the same connection and stream is already queued: that job will do the work
                await manager.finish_job_by_id_async(job.id, status=Status.ABORTED, delete_job=False)
                log.info("job %s was left by a dead worker; an equal job is already queued", job.id)
            recovered.append(job.id)
        return recovered

    def _mark_runs_abandoned(self, job: Job) -> None:
        kwargs: dict[str, Any] = dict(job.task_kwargs)
        try:
            tenant_id = UUID(str(kwargs["tenant_id"]))
        except (KeyError, ValueError):
            return
        with self.db.tenant(tenant_id) as conn:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.job_id == f"procrastinate:{job.id}", sync_runs.c.status == "running")
                .values(
                    status="failed",
                    finished_at=func.now(),
                    error_class="WorkerLostError",
                    error_message="the worker running this sync stopped (killed or crashed); it runs again",
                )
            )

    def delete_old_jobs(self, hours: int = 168) -> None:
        """Forget finished jobs older than ``hours`` (successful ones are deleted at once)."""
        self.call(
            lambda: self.app.job_manager.delete_old_jobs(
                nb_hours=hours, include_failed=True, include_cancelled=True, include_aborted=True
            )
        )
