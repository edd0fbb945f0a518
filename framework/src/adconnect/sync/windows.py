"""Which windows a sync reads: from the saved state to now, re-reading the lookback.

* The window ends at ``now - data_delay`` (``--until`` overrides).
* It starts where the last committed chunk ended minus the stream's lookback (attribution
  restatement), or ``default_backfill`` before the end when there is no state or a full
  refresh was asked for (``--since`` overrides both).
* A tenant may override the lookback per connection (``options.lookback_days``), within the
  stream's ``max_lookback``.
* Date-cursor streams work in whole UTC days: the start is floored to midnight and the end is
  the midnight after the last (possibly partial) day, so today is read and re-read next time.
* The window is split into the chunks the provider declares; each chunk is loaded and its
  state committed in one transaction.
* Streams without a cursor are snapshots: one read of everything, no window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from adconnect.errors import ConfigurationError
from adconnect.models import StreamSpec, SyncWindow

__all__ = ["WindowPlan", "day_floor", "plan_windows"]


@dataclass(frozen=True)
class WindowPlan:
    """The window of one stream run and its chunks (empty for an up-to-date stream)."""

    window: SyncWindow | None
    chunks: tuple[SyncWindow, ...]
    snapshot: bool = False
    #: How far state may advance after the last chunk: the end, minus any partial last day.
    complete_through: dt.datetime | None = None


def day_floor(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _day_ceil(moment: dt.datetime) -> dt.datetime:
    floor = day_floor(moment)
    return floor if floor == moment else floor + dt.timedelta(days=1)


def plan_windows(
    spec: StreamSpec,
    *,
    now: dt.datetime,
    state_end: dt.datetime | None,
    daily: bool,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    full_refresh: bool = False,
    lookback: dt.timedelta | None = None,
) -> WindowPlan:
    """Plan one stream run. ``daily`` is true for date cursors (whole-day windows)."""
    if spec.cursor_field is None:
        return WindowPlan(
            window=SyncWindow(start=now, end=now), chunks=(SyncWindow(start=now, end=now),), snapshot=True
        )
    if lookback is None:
        lookback = spec.default_lookback
    if spec.max_lookback is not None and lookback > spec.max_lookback:
        lookback = spec.max_lookback
    if lookback < dt.timedelta(0):
        raise ConfigurationError("a lookback cannot be negative")
    end = (until or now - spec.data_delay).astimezone(dt.UTC)
    if since is not None:
        start = since.astimezone(dt.UTC)
    elif state_end is None or full_refresh:
        start = end - spec.default_backfill
    else:
        start = min(state_end.astimezone(dt.UTC) - lookback, end)
    complete = end
    if daily:
        start, complete, end = day_floor(start), day_floor(end), _day_ceil(end)
    if start >= end:
        return WindowPlan(window=None, chunks=(), complete_through=state_end)
    window = SyncWindow(start=start, end=end)
    chunks = tuple(window.chunks(spec.chunk)) if spec.chunk else (window,)
    return WindowPlan(window=window, chunks=chunks, complete_through=complete)
