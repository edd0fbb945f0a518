"""Run records, the API error log, stream state and metric quarantine: what the engine writes
besides raw rows. Every write here is tenant-scoped (row-level security) except the metric
registry, which holds facts about a provider's API shared by every tenant."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from adconnect.db.database import Database
from adconnect.db.schema import api_error_log, metric_registry, stream_states, sync_runs
from adconnect.errors import ProviderError
from adconnect.redaction import redact

__all__ = ["RunCounts", "RunLog", "load_state", "save_state"]

#: Messages are cut to this length before they are stored.
MAX_MESSAGE = 2000


@dataclass
class RunCounts:
    records_read: int = 0
    records_inserted: int = 0
    records_updated: int = 0
    records_deleted: int = 0
    records_skipped: int = 0
    api_calls: int = 0
    rate_limit_wait_seconds: float = 0.0
    chunks: int = 0
    bad_records: list[dict[str, Any]] = field(default_factory=list)


def _message(text: str) -> str:
    return redact(text)[:MAX_MESSAGE]


class RunLog:
    """Writes one stream run's record and its API errors (each in its own short transaction)."""

    def __init__(
        self,
        db: Database,
        *,
        tenant_id: UUID,
        connection_id: UUID,
        provider_id: str,
        stream: str,
        trigger: str,
        job_id: str | None,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.connection_id = connection_id
        self.provider_id = provider_id
        self.stream = stream
        with db.tenant(tenant_id) as conn:
            self.run_id: UUID = conn.execute(
                insert(sync_runs)
                .values(
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    provider_id=provider_id,
                    stream=stream,
                    status="running",
                    trigger=trigger,
                    job_id=job_id,
                )
                .returning(sync_runs.c.id)
            ).scalar_one()

    def set_window(self, start: dt.datetime | None, end: dt.datetime | None) -> None:
        with self.db.tenant(self.tenant_id) as conn:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == self.run_id)
                .values(window_start=start, window_end=end)
            )

    def api_error(self, error: ProviderError, *, account_id: str | None) -> None:
        """Record a provider error: endpoint, status, codes, message, retryable - never secrets."""
        fields = dict(error.log_fields())
        fields["message"] = _message(str(fields["message"]))
        with self.db.tenant(self.tenant_id) as conn:
            conn.execute(
                insert(api_error_log).values(
                    tenant_id=self.tenant_id,
                    provider_id=self.provider_id,
                    connection_id=self.connection_id,
                    run_id=self.run_id,
                    account_id=account_id,
                    correlation_id=str(self.run_id),
                    **fields,
                )
            )

    def finish(
        self,
        status: str,
        counts: RunCounts,
        *,
        error: BaseException | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        body = {"chunks": counts.chunks, **(details or {})}
        if counts.bad_records:
            body["bad_records"] = counts.bad_records
        with self.db.tenant(self.tenant_id) as conn:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == self.run_id)
                .values(
                    status=status,
                    finished_at=func.now(),
                    records_read=counts.records_read,
                    records_inserted=counts.records_inserted,
                    records_updated=counts.records_updated,
                    records_deleted=counts.records_deleted,
                    records_skipped=counts.records_skipped,
                    api_calls=counts.api_calls,
                    rate_limit_wait_seconds=counts.rate_limit_wait_seconds,
                    error_class=None if error is None else type(error).__name__,
                    error_message=None if error is None else _message(_error_text(error)),
                    details=json.loads(json.dumps(body, default=str)),
                )
            )

    def mark_needs_reauth(self, reason: str) -> None:
        from adconnect.connections import mark_needs_reauth

        with self.db.tenant(self.tenant_id) as conn:
            mark_needs_reauth(conn, self.connection_id, reason)

    def quarantine_metric(self, metric_id: str, reason: str) -> None:
        """Mark a metric invalid for every tenant: the provider's API rejects it."""
        provider = metric_id.split(".", 1)[0]
        with self.db.platform() as conn:
            conn.execute(
                pg_insert(metric_registry)
                .values(
                    metric_id=metric_id,
                    provider_id=provider,
                    level="unknown",
                    unit="count",
                    periods=[],
                    status="invalid",
                    status_reason=_message(reason),
                )
                .on_conflict_do_update(
                    index_elements=[metric_registry.c.metric_id],
                    set_={"status": "invalid", "status_reason": _message(reason), "updated_at": func.now()},
                )
            )


def _error_text(error: BaseException) -> str:
    user_message = getattr(error, "user_message", None)
    return str(user_message) if user_message else f"{type(error).__name__}: {error}"


def load_state(conn: Connection, connection_id: UUID, stream: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(stream_states.c.state).where(
            stream_states.c.connection_id == connection_id, stream_states.c.stream == stream
        )
    ).first()
    return None if row is None else dict(row.state)


def save_state(
    conn: Connection, *, tenant_id: UUID, connection_id: UUID, stream: str, state: Mapping[str, Any]
) -> None:
    """Upsert the stream state inside the caller's transaction (the one holding the data)."""
    value = json.loads(json.dumps(dict(state), default=str))
    conn.execute(
        pg_insert(stream_states)
        .values(
            tenant_id=tenant_id,
            connection_id=connection_id,
            stream=stream,
            state=value,
        )
        .on_conflict_do_update(
            index_elements=[stream_states.c.connection_id, stream_states.c.stream],
            set_={"state": value, "updated_at": func.now()},
        )
    )
