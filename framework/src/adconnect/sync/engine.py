"""The sync engine: read a connection's streams through its provider and load them safely.

For each stream the engine plans windows (:mod:`adconnect.sync.windows`), and for each chunk it
opens ONE tenant transaction in which it loads the chunk's records (:mod:`adconnect.sync.loader`)
and saves the stream state; a crash anywhere before the commit leaves both as they were, and the
next run re-reads the chunk. State never runs ahead of data.

The engine maps the error hierarchy once:

* :class:`RetryableProviderError` - back off (honouring ``retry_after``, which also blocks the
  provider's quota scope for every tenant) and retry the chunk, up to ``max_attempts``; then the
  run fails and the caller reschedules it;
* :class:`ReauthRequiredError` / :class:`MissingScopesError` - mark the connection
  ``needs_reauth`` (its schedules stop), keep the state, fail the run;
* :class:`InvalidMetricError` - quarantine the metric in the registry and re-read the chunk
  without it;
* bad records - counted and skipped with their context;
* :class:`FatalProviderError` and anything else - fail the run.

Every provider error is written to the API error log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from adconnect.connections import ConnectionRecord, ConnectionService
from adconnect.db.database import Database
from adconnect.errors import (
    AdconnectError,
    ConfigurationError,
    NotFoundError,
    ReauthRequiredError,
)
from adconnect.models import (
    StreamSpec,
    SyncFinished,
    SyncStarted,
    SyncWindow,
    TokenSet,
)
from adconnect.plugins import PluginHost
from adconnect.quota import QuotaGovernor, collect_stats, use_governor
from adconnect.sync.raw_tables import RawTable, ensure_raw_table
from adconnect.sync.results import Progress, StreamOptions, StreamResult
from adconnect.sync.runs import RunCounts, RunLog, load_state
from adconnect.sync.stream_run import RunFailed, StreamRun
from adconnect.sync.windows import WindowPlan, plan_windows

__all__ = ["Progress", "StreamOptions", "StreamResult", "SyncEngine"]  # the three are re-exported

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = StreamOptions()


class SyncEngine:
    """Runs stream syncs for connections. One instance per process is enough."""

    def __init__(
        self,
        db: Database,
        host: PluginHost,
        governor: QuotaGovernor,
        *,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.db = db
        self.host = host
        self.governor = governor
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.clock = clock

    # --- one connection --------------------------------------------------------------------

    def sync_connection(
        self,
        service: ConnectionService,
        tenant_id: UUID,
        connection_id: UUID,
        *,
        streams: Sequence[str] | None = None,
        options: StreamOptions = DEFAULT_OPTIONS,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[StreamResult]:
        """Sync the connection's streams (all, or those named) one after the other.

        Refuses a connection whose provider is disabled for the tenant or that needs re-auth;
        refreshes a token that expires within five minutes first.
        """
        record = service.get(tenant_id, connection_id)
        if not service.provider_enabled(tenant_id, record.provider_id):
            raise ConfigurationError(
                f"{record.provider_id} is disabled for this tenant",
                hint=f"`adconnect providers enable {record.provider_id} --tenant <tenant>` first",
            )
        if record.status == "needs_reauth":
            raise ReauthRequiredError(
                f"connection {record.name} needs to be re-authorised: "
                f"{record.status_reason or 'credential invalid'}",
                hint="run the connect flow again (`adconnect connect start ...`)",
                provider_id=record.provider_id,
            )
        token = service.fresh_token(record)
        specs = self.host.streams(record.provider_id)
        if streams:
            known = {s.name for s in specs}
            unknown = sorted(set(streams) - known)
            if unknown:
                raise NotFoundError(
                    f"{record.provider_id} has no stream(s) {', '.join(unknown)}",
                    hint=f"streams: {', '.join(sorted(known))}",
                )
            specs = [s for s in specs if s.name in streams]
        results = []
        for spec in specs:
            result = self.sync_stream(record, token, spec, options, on_progress)
            results.append(result)
            if result.error_class in ("ReauthRequiredError", "MissingScopesError"):
                break  # the other streams would fail the same way
        return results

    # --- one stream ------------------------------------------------------------------------

    def sync_stream(
        self,
        connection: ConnectionRecord,
        token: TokenSet | None,
        spec: StreamSpec,
        options: StreamOptions = DEFAULT_OPTIONS,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> StreamResult:
        """Sync one stream of one connection now; never raises for provider or data errors."""
        started = time.monotonic()
        runlog = RunLog(
            self.db,
            tenant_id=connection.tenant_id,
            connection_id=connection.id,
            provider_id=connection.provider_id,
            stream=spec.name,
            trigger=options.trigger,
            job_id=options.job_id,
        )
        counts = RunCounts()
        plan: WindowPlan | None = None
        status, error = "succeeded", None
        with use_governor(self.governor), collect_stats() as stats:
            try:
                table = RawTable.from_spec(connection.provider_id, spec)
                ensure_raw_table(self.db, table)
                plan = self._plan(connection, spec, table, options)
                runlog.set_window(*(plan.window.start, plan.window.end) if plan.window else (None, None))
                self.host.notify_sync_started(
                    SyncStarted(
                        run_id=runlog.run_id,
                        connection=connection.ref(),
                        stream=spec.name,
                        window=plan.window or SyncWindow(start=self.clock(), end=self.clock()),
                    )
                )
                StreamRun(
                    self, connection, token, spec, table, plan, options, runlog, counts, on_progress, stats
                ).run()
            except RunFailed as failed:
                status, error = "failed", failed.error
            except AdconnectError as exc:
                status, error = "failed", exc
            except Exception as exc:  # a plugin bug or an unexpected database error: record it
                log.exception("sync of %s.%s failed", connection.provider_id, spec.name)
                status, error = "failed", exc
            counts.api_calls, counts.rate_limit_wait_seconds = stats.api_calls, stats.rate_limit_wait_seconds
        if status == "succeeded" and counts.records_skipped:
            status = "partial"
        runlog.finish(status, counts, error=error)
        window = plan.window if plan else None
        self.host.notify_sync_finished(
            SyncFinished(
                run_id=runlog.run_id,
                connection=connection.ref(),
                stream=spec.name,
                window=window or SyncWindow(start=self.clock(), end=self.clock()),
                status=status,
                records_read=counts.records_read,
                error_class=None if error is None else type(error).__name__,
            )
        )
        return StreamResult(
            spec.name,
            runlog.run_id,
            status,
            window,
            counts,
            time.monotonic() - started,
            None if error is None else type(error).__name__,
            None if error is None else getattr(error, "user_message", str(error)),
        )

    def _plan(
        self, connection: ConnectionRecord, spec: StreamSpec, table: RawTable, options: StreamOptions
    ) -> WindowPlan:
        with self.db.tenant(connection.tenant_id) as conn:
            state = load_state(conn, connection.id, spec.name) or {}
        state_end = dt.datetime.fromisoformat(state["window_end"]) if state.get("window_end") else None
        lookback_days = connection.options.get("lookback_days")
        if lookback_days is not None and not isinstance(lookback_days, int | float):
            raise ConfigurationError(
                f"connection option lookback_days must be a number, not {lookback_days!r}"
            )
        daily = table.cursor is not None and table.column(table.cursor).pg_type == "date"
        return plan_windows(
            spec,
            now=self.clock(),
            state_end=state_end,
            daily=daily,
            since=options.since,
            until=options.until,
            full_refresh=options.full_refresh,
            lookback=None if lookback_days is None else dt.timedelta(days=float(lookback_days)),
        )
