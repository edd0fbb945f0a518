"""The leader's APScheduler: one in-memory job per active schedule, kept in step with the database.

Only the leader runs a :class:`SyncScheduler` (job stores are never shared between schedulers).
It decides *when*; a fire defers one queue job per stream (:meth:`QueueWorker.defer`) and records
``schedule_fires.last_fired_at`` after the defers, so a crash in between re-fires (coalesced or
re-run, both safe) rather than loses a fire.

* **Reconcile.** Every ``ADCONNECT_SCHEDULE_REFRESH_SECONDS`` the wanted schedules are recomputed
  (:func:`~adconnect.scheduling.plan.compute_schedules`): new ones are added, vanished ones
  removed, changed ones (cron, zone, streams) replaced - no restart needed.
* **Catch-up.** When a job is added (first of all when a replica becomes leader) and a fire fell
  between its ``last_fired_at`` and now, within the misfire grace, it fires once at once; the
  APScheduler job then starts strictly after now, so no fire is doubled. A job with no fire record
  gets one (``now``), so even a job added just before its first fire survives a leader change.
* **Misfires and pile-ups.** APScheduler's ``misfire_grace_time`` and ``coalesce`` cover a slow
  leader; the queue's locks allow one running and one waiting job per connection and stream.
* **Recovery.** The leader also puts the jobs of dead workers back in the queue and forgets old
  finished jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler

from adconnect.db.database import Database
from adconnect.plugins import PluginHost
from adconnect.scheduling.cron import next_fire_after
from adconnect.scheduling.plan import EffectiveSchedule, compute_schedules
from adconnect.scheduling.store import record_fire, seed_fire
from adconnect.scheduling.worker import QueueWorker
from adconnect.settings import FrameworkSettings

__all__ = ["ReconcileReport", "SyncScheduler"]

log = logging.getLogger(__name__)

CLEANUP_EVERY = dt.timedelta(hours=1)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ReconcileReport:
    added: int
    removed: int
    replaced: int
    caught_up: int


class SyncScheduler:
    """The leader's scheduler. :meth:`start` when elected, :meth:`stop` when stepping down."""

    def __init__(
        self,
        settings: FrameworkSettings,
        db: Database,
        host: PluginHost,
        queue: QueueWorker,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.host = host
        self.queue = queue
        self.clock = clock
        self.grace = dt.timedelta(seconds=settings.misfire_grace_seconds)
        self.scheduler = BackgroundScheduler(
            timezone=ZoneInfo(settings.timezone),
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.misfire_grace_seconds,
            },
        )
        self._plans: dict[str, EffectiveSchedule] = {}
        self._lock = threading.Lock()
        self._last_cleanup: dt.datetime | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> ReconcileReport:
        """Catch up, schedule every active schedule, and start the periodic duties."""
        self.scheduler.start()
        report = self.reconcile()
        self.scheduler.add_job(
            self._reconcile_quietly,
            "interval",
            id="_reconcile",
            seconds=self.settings.schedule_refresh_seconds,
        )
        self.scheduler.add_job(
            self.maintain,
            "interval",
            id="_maintain",
            seconds=max(0.5, min(self.settings.stalled_worker_seconds / 3, 30.0)),
            next_run_time=self.clock(),
        )
        return report

    def stop(self) -> None:
        """Stop scheduling (waits for a fire in progress)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        with self._lock:
            self._plans.clear()

    def next_runs(self) -> dict[str, dt.datetime | None]:
        """``job_key -> next fire time`` of every scheduled sync job."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs() if not job.id.startswith("_")}

    # --- reconcile -------------------------------------------------------------------------

    def _reconcile_quietly(self) -> None:
        try:
            self.reconcile()
        except Exception:
            log.exception("could not refresh the schedules; keeping the current ones")

    def reconcile(self) -> ReconcileReport:
        """Bring the APScheduler jobs in line with the database; fire missed ones once."""
        wanted = {s.key: s for s in compute_schedules(self.db, self.host, self.settings.timezone) if s.active}
        added = removed = replaced = caught_up = 0
        with self._lock:
            for key in [k for k in self._plans if k not in wanted]:
                plan = self._plans.pop(key)
                self._remove(key)
                removed += 1
                log.info("unscheduled %s (%s)", self._describe(plan), "no longer active")
            for key, plan in wanted.items():
                current = self._plans.get(key)
                if current is not None and current.signature == plan.signature:
                    self._plans[key] = plan
                    continue
                if current is not None:
                    self._remove(key)
                    replaced += 1
                else:
                    added += 1
                self._plans[key] = plan
                caught_up += self._add(plan)
        if added or removed or replaced:
            log.info(
                "schedules refreshed: %d added, %d removed, %d changed, %d caught up; %d scheduled",
                added,
                removed,
                replaced,
                caught_up,
                len(wanted),
            )
        return ReconcileReport(added, removed, replaced, caught_up)

    def _remove(self, key: str) -> None:
        if self.scheduler.get_job(key) is not None:
            self.scheduler.remove_job(key)

    def _add(self, plan: EffectiveSchedule) -> int:
        now = self.clock()
        trigger = plan.trigger()
        caught_up = 0
        if plan.last_fired_at is None:
            seed_fire(self.db, plan.tenant_id, plan.key, now)
        else:
            since = max(plan.last_fired_at, now - self.grace)
            missed = next_fire_after(trigger, since)
            if missed is not None and missed <= now:
                log.info("catching up %s: its %s fire was missed", self._describe(plan), missed.isoformat())
                self.fire(plan.key)
                caught_up = 1
        first = next_fire_after(trigger, now)
        if first is None:
            log.info("%s never fires again", self._describe(plan))
            return caught_up
        self.scheduler.add_job(
            self.fire,
            trigger=trigger,
            args=[plan.key],
            id=plan.key,
            name=self._describe(plan),
            next_run_time=first,
        )
        return caught_up

    # --- fire ------------------------------------------------------------------------------

    @staticmethod
    def _describe(plan: EffectiveSchedule) -> str:
        return f"{plan.tenant_slug}/{plan.provider_id}/{plan.connection_name} schedule {plan.name!r}"

    def fire(self, key: str) -> None:
        """Queue one sync job per stream of schedule ``key`` and record the fire."""
        plan = self._plans.get(key)
        if plan is None:
            return
        started = time.monotonic()
        queued: list[str] = []
        coalesced: list[str] = []
        for stream in plan.streams:
            job_id = self.queue.defer(plan.tenant_id, plan.connection_id, stream, "schedule")
            if job_id is None:
                coalesced.append(stream)
            else:
                queued.append(f"{stream} (job {job_id})")
        record_fire(self.db, plan.tenant_id, key, self.clock())
        log.info(
            "fired %s: queued %s%s [%.0f ms]",
            self._describe(plan),
            ", ".join(queued) or "nothing",
            f"; already queued, coalesced: {', '.join(coalesced)}" if coalesced else "",
            (time.monotonic() - started) * 1000,
        )

    # --- maintenance -----------------------------------------------------------------------

    def maintain(self) -> None:
        """Recover the jobs of dead workers; now and then forget old finished jobs."""
        try:
            self.queue.recover_stalled()
            now = self.clock()
            if self._last_cleanup is None or now - self._last_cleanup >= CLEANUP_EVERY:
                self.queue.delete_old_jobs()
                self._last_cleanup = now
        except Exception:
            log.exception("queue maintenance failed; trying again later")
