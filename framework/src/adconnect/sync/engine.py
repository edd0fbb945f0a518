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
from typing import Any
from uuid import UUID

from adconnect.connections import ConnectionRecord, ConnectionService
from adconnect.db.database import Database
from adconnect.errors import (
    AdconnectError,
    ConfigurationError,
    InvalidMetricError,
    NotFoundError,
    ProviderError,
    ReauthRequiredError,
    RetryableProviderError,
)
from adconnect.models import (
    ReadRequest,
    RecordBatch,
    StreamSpec,
    SyncFinished,
    SyncStarted,
    SyncWindow,
    TokenSet,
)
from adconnect.plugins import PluginHost
from adconnect.quota import QuotaGovernor, collect_stats, use_governor
from adconnect.sync import crashpoints
from adconnect.sync.loader import ChunkLoader, DuplicateKeysError, delete_outside
from adconnect.sync.raw_tables import RawTable, ensure_raw_table
from adconnect.sync.records import MAX_BAD_RECORD_SAMPLES, RecordValidator, prefetch
from adconnect.sync.results import Progress, StreamOptions, StreamResult
from adconnect.sync.runs import RunCounts, RunLog, load_state, save_state
from adconnect.sync.windows import WindowPlan, plan_windows

__all__ = ["Progress", "StreamOptions", "StreamResult", "SyncEngine"]  # the three are re-exported

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = StreamOptions()


class _RunFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


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
                self._run_chunks(
                    connection, token, spec, table, plan, options, runlog, counts, on_progress, stats
                )
            except _RunFailed as failed:
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
                status=status if status != "partial" else "partial",
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

    def _run_chunks(
        self,
        connection: ConnectionRecord,
        token: TokenSet | None,
        spec: StreamSpec,
        table: RawTable,
        plan: WindowPlan,
        options: StreamOptions,
        runlog: RunLog,
        counts: RunCounts,
        on_progress: Callable[[Progress], None] | None,
        stats: Any,
    ) -> None:
        scope = self.host.info(connection.provider_id).quota_scope
        invalid: set[str] = set()
        for index, chunk in enumerate(plan.chunks):
            attempt, strategy = 0, None
            while True:
                attempt += 1
                if scope:
                    self.governor.acquire(scope)
                try:
                    self._load_chunk(
                        connection,
                        token,
                        spec,
                        table,
                        plan,
                        chunk,
                        options,
                        counts,
                        frozenset(invalid),
                        strategy,
                        last=index == len(plan.chunks) - 1,
                        on_progress=on_progress,
                        chunk_index=index,
                        stats=stats,
                    )
                    break
                except DuplicateKeysError:
                    if strategy == "stage":
                        raise
                    log.warning(
                        "%s.%s repeated a key inside one window; reloading the chunk via staging",
                        connection.provider_id,
                        spec.name,
                    )
                    strategy = "stage"
                except InvalidMetricError as exc:
                    runlog.api_error(_as_provider_error(exc), account_id=connection.external_account_id)
                    if exc.metric_id in invalid:
                        raise _RunFailed(exc) from exc
                    runlog.quarantine_metric(exc.metric_id, exc.user_message)
                    invalid.add(exc.metric_id)
                except ReauthRequiredError as exc:
                    runlog.api_error(_as_provider_error(exc), account_id=connection.external_account_id)
                    runlog.mark_needs_reauth(exc.user_message)
                    raise _RunFailed(exc) from exc
                except RetryableProviderError as exc:
                    runlog.api_error(exc, account_id=connection.external_account_id)
                    if attempt >= self.max_attempts:
                        raise _RunFailed(exc) from exc
                    self._back_off(scope, exc, attempt)
                except ProviderError as exc:
                    runlog.api_error(exc, account_id=connection.external_account_id)
                    raise _RunFailed(exc) from exc
            counts.chunks += 1
            if on_progress is not None:
                on_progress(
                    Progress(
                        spec.name,
                        counts.records_read,
                        index + 1,
                        len(plan.chunks),
                        stats.api_calls,
                        stats.rate_limit_wait_seconds,
                    )
                )

    def _back_off(self, scope: str | None, exc: RetryableProviderError, attempt: int) -> None:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
            if scope:  # every tenant on this scope waits too
                self.governor.report_block(scope, exc.retry_after, reason=exc.user_message)
        log.info("retrying in %.1fs after: %s", delay, exc.user_message)
        if scope and exc.retry_after is not None:
            self.governor.acquire(scope)
        else:
            self.sleep(delay)

    def _load_chunk(
        self,
        connection: ConnectionRecord,
        token: TokenSet | None,
        spec: StreamSpec,
        table: RawTable,
        plan: WindowPlan,
        chunk: SyncWindow,
        options: StreamOptions,
        counts: RunCounts,
        invalid: frozenset[str],
        strategy: str | None,
        *,
        last: bool,
        on_progress: Callable[[Progress], None] | None,
        chunk_index: int,
        stats: Any,
    ) -> None:
        validator = RecordValidator(spec, table)
        tenant_id = connection.tenant_id
        with self.db.tenant(tenant_id) as conn:
            state = load_state(conn, connection.id, spec.name) or {}
            provider_state = state.get("provider_state") if not options.full_refresh or chunk_index else None
            loader = ChunkLoader(
                conn,
                table,
                tenant_id=tenant_id,
                connection_id=connection.id,
                window=None if plan.snapshot else (chunk.start, chunk.end),
                loader_role=self.db.loader_role,
                strategy=strategy,
            )
            loader.begin()
            crashpoints.hit("chunk_begun")
            read = skipped = 0
            bad: list[dict[str, Any]] = []
            request = ReadRequest(
                connection=connection.ref(),
                stream=spec.name,
                window=chunk,
                state=provider_state,
                token=token,
                invalid_metrics=invalid,
            )
            try:
                for kind, payload in prefetch(
                    self.host.read_stream(connection.provider_id, request), lambda m: _validate(validator, m)
                ):
                    if kind == "state":
                        provider_state = payload
                        continue
                    loader.write(payload.rows)
                    crashpoints.hit("batch_staged")
                    read += len(payload.rows) + len(payload.bad)
                    skipped += len(payload.bad)
                    bad.extend(b.__dict__ for b in payload.bad[: MAX_BAD_RECORD_SAMPLES - len(bad)])
                    if on_progress is not None:
                        on_progress(
                            Progress(
                                spec.name,
                                counts.records_read + read,
                                chunk_index,
                                len(plan.chunks),
                                stats.api_calls,
                                stats.rate_limit_wait_seconds,
                            )
                        )
                crashpoints.hit("before_move")
                loaded = loader.finish()
            except BaseException:
                loader.abort()
                raise
            crashpoints.hit("after_move")
            if options.full_refresh and last and plan.window is not None and not plan.snapshot:
                loaded.deleted += delete_outside(
                    conn,
                    table,
                    tenant_id=tenant_id,
                    connection_id=connection.id,
                    window=(plan.window.start, plan.window.end),
                )
            end = chunk.end if plan.complete_through is None else min(chunk.end, plan.complete_through)
            new_state = {
                "window_end": end.isoformat() if not plan.snapshot else None,
                "provider_state": provider_state,
            }
            save_state(
                conn, tenant_id=tenant_id, connection_id=connection.id, stream=spec.name, state=new_state
            )
            crashpoints.hit("state_saved")
        crashpoints.hit("committed")
        counts.records_read += read
        counts.records_skipped += skipped
        counts.records_inserted += loaded.inserted
        counts.records_updated += loaded.updated
        counts.records_deleted += loaded.deleted
        counts.bad_records.extend(bad[: MAX_BAD_RECORD_SAMPLES - len(counts.bad_records)])


def _validate(validator: RecordValidator, message: Any) -> tuple[str, Any]:
    if isinstance(message, RecordBatch):
        return "records", validator.validate(list(message.records))
    return "state", dict(message.state)


def _as_provider_error(exc: AdconnectError) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(exc.user_message, provider_id=exc.provider_id)
