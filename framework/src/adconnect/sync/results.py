"""What a sync is asked to do and what it reports: options, progress events, results."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from adconnect.models import SyncWindow
from adconnect.sync.runs import RunCounts

__all__ = ["Progress", "StreamOptions", "StreamResult"]


@dataclass(frozen=True)
class StreamOptions:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    full_refresh: bool = False
    trigger: str = "manual"
    job_id: str | None = None


@dataclass(frozen=True)
class Progress:
    """Reported after every batch and chunk, for progress displays."""

    stream: str
    records: int
    chunks_done: int
    chunks_total: int
    api_calls: int
    rate_limit_wait_seconds: float


@dataclass
class StreamResult:
    stream: str
    run_id: UUID
    status: str
    window: SyncWindow | None
    counts: RunCounts
    duration_seconds: float
    error_class: str | None = None
    error_message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "stream": self.stream,
            "run_id": str(self.run_id),
            "status": self.status,
            "window_start": self.window.start.isoformat() if self.window else None,
            "window_end": self.window.end.isoformat() if self.window else None,
            "records_read": c.records_read,
            "records_inserted": c.records_inserted,
            "records_updated": c.records_updated,
            "records_deleted": c.records_deleted,
            "records_skipped": c.records_skipped,
            "api_calls": c.api_calls,
            "rate_limit_wait_seconds": round(c.rate_limit_wait_seconds, 3),
            "chunks": c.chunks,
            "duration_seconds": round(self.duration_seconds, 3),
            "error_class": self.error_class,
            "error_message": self.error_message,
        }
