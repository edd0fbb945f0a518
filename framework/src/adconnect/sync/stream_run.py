"""One stream run in progress: its chunks, their transactions, and the error mapping.

Each chunk is read and committed together with the stream state in ONE tenant transaction, so
a crash anywhere before the commit leaves both as they were. The error hierarchy is mapped
here, once: retry with back-off (and a quota-scope block for every tenant), quarantine an
invalid metric and re-read, mark the connection for re-auth, or fail the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adconnect.connections import ConnectionRecord
from adconnect.errors import (
    AdconnectError,
    InvalidMetricError,
    ProviderError,
    ReauthRequiredError,
    RetryableProviderError,
)
from adconnect.models import ReadRequest, RecordBatch, StreamSpec, SyncWindow, TokenSet
from adconnect.quota import RunStats
from adconnect.sync import crashpoints
from adconnect.sync.loader import ChunkLoader, DuplicateKeysError, delete_outside
from adconnect.sync.raw_tables import RawTable
from adconnect.sync.records import MAX_BAD_RECORD_SAMPLES, RecordValidator, prefetch
from adconnect.sync.results import Progress, StreamOptions
from adconnect.sync.runs import RunCounts, RunLog, load_state, save_state
from adconnect.sync.windows import WindowPlan

if TYPE_CHECKING:
    from adconnect.sync.engine import SyncEngine

__all__ = ["RunFailed", "StreamRun"]

log = logging.getLogger("adconnect.sync.engine")


class RunFailed(Exception):
    """The run stops here; ``error`` says why (it is recorded on the run)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class StreamRun:
    engine: SyncEngine
    connection: ConnectionRecord
    token: TokenSet | None
    spec: StreamSpec
    table: RawTable
    plan: WindowPlan
    options: StreamOptions
    runlog: RunLog
    counts: RunCounts
    on_progress: Callable[[Progress], None] | None
    stats: RunStats

    def run(self) -> None:
        """Load every chunk; retry, quarantine or fail as the error hierarchy says."""
        engine, connection, spec, plan, runlog, counts = (
            self.engine,
            self.connection,
            self.spec,
            self.plan,
            self.runlog,
            self.counts,
        )
        scope = engine.host.info(connection.provider_id).quota_scope
        invalid: set[str] = set()
        for index, chunk in enumerate(plan.chunks):
            attempt, strategy = 0, None
            while True:
                attempt += 1
                if scope:
                    engine.governor.acquire(scope)
                try:
                    self._load_chunk(chunk, index, frozenset(invalid), strategy)
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
                        raise RunFailed(exc) from exc
                    runlog.quarantine_metric(exc.metric_id, exc.user_message)
                    invalid.add(exc.metric_id)
                except ReauthRequiredError as exc:
                    runlog.api_error(_as_provider_error(exc), account_id=connection.external_account_id)
                    runlog.mark_needs_reauth(exc.user_message)
                    raise RunFailed(exc) from exc
                except RetryableProviderError as exc:
                    runlog.api_error(exc, account_id=connection.external_account_id)
                    if attempt >= engine.max_attempts:
                        raise RunFailed(exc) from exc
                    self._back_off(scope, exc, attempt)
                except ProviderError as exc:
                    runlog.api_error(exc, account_id=connection.external_account_id)
                    raise RunFailed(exc) from exc
            counts.chunks += 1
            self._progress(counts.records_read, index + 1)

    def _progress(self, records: int, chunks_done: int) -> None:
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    self.spec.name,
                    records,
                    chunks_done,
                    len(self.plan.chunks),
                    self.stats.api_calls,
                    self.stats.rate_limit_wait_seconds,
                )
            )

    def _back_off(self, scope: str | None, exc: RetryableProviderError, attempt: int) -> None:
        engine = self.engine
        delay = min(engine.backoff_cap, engine.backoff_base * 2 ** (attempt - 1))
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
            if scope:  # every tenant on this scope waits too
                engine.governor.report_block(scope, exc.retry_after, reason=exc.user_message)
        log.info("retrying in %.1fs after: %s", delay, exc.user_message)
        if scope and exc.retry_after is not None:
            engine.governor.acquire(scope)
        else:
            engine.sleep(delay)

    def _load_chunk(
        self, chunk: SyncWindow, chunk_index: int, invalid: frozenset[str], strategy: str | None
    ) -> None:
        """Read one chunk and commit its rows with its state, in one tenant transaction."""
        engine, connection, spec, table, plan, options, counts = (
            self.engine,
            self.connection,
            self.spec,
            self.table,
            self.plan,
            self.options,
            self.counts,
        )
        last = chunk_index == len(plan.chunks) - 1
        validator = RecordValidator(spec, table)
        tenant_id = connection.tenant_id
        with engine.db.tenant(tenant_id) as conn:
            state = load_state(conn, connection.id, spec.name) or {}
            provider_state = state.get("provider_state") if not options.full_refresh or chunk_index else None
            loader = ChunkLoader(
                conn,
                table,
                tenant_id=tenant_id,
                connection_id=connection.id,
                window=None if plan.snapshot else (chunk.start, chunk.end),
                loader_role=engine.db.loader_role,
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
                token=self.token,
                invalid_metrics=invalid,
            )
            try:
                for kind, payload in prefetch(
                    engine.host.read_stream(connection.provider_id, request),
                    lambda m: _validate(validator, m),
                ):
                    if kind == "state":
                        provider_state = payload
                        continue
                    loader.write(payload.rows)
                    crashpoints.hit("batch_staged")
                    read += len(payload.rows) + len(payload.bad)
                    skipped += len(payload.bad)
                    bad.extend(b.__dict__ for b in payload.bad[: MAX_BAD_RECORD_SAMPLES - len(bad)])
                    self._progress(counts.records_read + read, chunk_index)
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
