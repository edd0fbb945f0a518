"""The quota governor: one API budget per provider credential scope, shared by every tenant.

Providers meter quota per credential, not per tenant: one Meta app (``meta:app:<app_id>``) or
one Google Ads developer token serves every client, so one tenant's busy sync throttles everyone.
The governor keeps a row per scope in the platform table ``quota_scopes`` (no ``tenant_id``, on
purpose); providers *report* what they learn and every call *acquires* the scope first.

* **In the database, so replicas share it.** Runner replicas on several machines share one
  PostgreSQL. :meth:`QuotaGovernor.acquire` reads the row on every check (a primary-key lookup)
  and sleeps in slices of at most ``poll_interval``, so a block written by any process, or
  extended meanwhile, is honoured at once. Blocks are absolute times: replicas need the
  NTP-synchronised clocks any distributed system needs.
* **Blocks only grow.** Writes are upserts with ``blocked_until = greatest(old, new)``: concurrent
  reports with different hints, or a late one, never shorten or lift a block.
* **Pace before the hard limit.** From ``throttle_at`` percent of usage to 100 each call first
  waits in proportion (up to ``max_pacing_delay`` s), spreading calls out instead of hitting the
  wall. At 100 %, or given a regain hint (Meta ``estimated_time_to_regain_access``, Google
  ``retry_delay``, HTTP ``Retry-After``), the scope is blocked for every tenant.

Provider code reaches the governor without plumbing: the runner installs it with
:func:`use_governor` and counts per-run figures with :func:`collect_stats`; clients wrap each
call in :func:`guarded_call` or give ``httpx.Client`` the :func:`httpx_event_hooks`.
Mapping provider *errors* onto :mod:`adconnect.errors` stays in each plugin's client.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from adconnect.db.database import Database
from adconnect.db.schema import quota_scopes

__all__ = [
    "DEFAULT_BLOCK_SECONDS",
    "MAX_BLOCK_SECONDS",
    "QuotaGovernor",
    "QuotaStatus",
    "RunStats",
    "UsageSignal",
    "collect_stats",
    "current_governor",
    "current_stats",
    "guarded_call",
    "httpx_event_hooks",
    "meta_usage",
    "record_call",
    "retry_after_usage",
    "use_governor",
]

log = logging.getLogger(__name__)

#: How long a scope is blocked when usage reaches 100 % and the provider gives no hint.
DEFAULT_BLOCK_SECONDS = 60.0
#: The longest block a report may set (a bad hint must not stop every tenant for days).
MAX_BLOCK_SECONDS = 86_400.0


@dataclass(frozen=True)
class QuotaStatus:
    """What the governor knows about one scope (``blocked_until`` may lie in the past)."""

    scope: str
    blocked_until: datetime | None
    usage_pct: float
    reason: str | None


@dataclass(frozen=True)
class UsageSignal:
    """A usage reading parsed from a provider response: percent used, optional regain hint (s)."""

    usage_pct: float
    regain_after: float | None = None
    reason: str | None = None


@dataclass
class RunStats:
    """Figures of the run executing in this context (the ``sync_runs`` columns of the same name)."""

    api_calls: int = 0
    rate_limit_wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def add(self, *, calls: int = 0, wait: float = 0.0) -> None:
        """Add calls and waiting time (safe when worker threads share one run's stats)."""
        with self._lock:
            self.api_calls += calls
            self.rate_limit_wait_seconds += wait


_stats: ContextVar[RunStats | None] = ContextVar("adconnect_run_stats", default=None)
_governor: ContextVar[QuotaGovernor | None] = ContextVar("adconnect_quota_governor", default=None)


def _finite(value: float, name: str, ceiling: float = math.inf) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return min(max(0.0, number), ceiling)


class QuotaGovernor:
    """Shared API budgets, one per credential scope, stored in ``quota_scopes``.

    :param throttle_at: usage percent from which calls are paced.
    :param max_pacing_delay: the pacing delay (seconds) just below 100 %.
    :param poll_interval: longest single sleep; the row is re-read after each one.
    :param clock: seconds since the epoch (injectable for tests); ``sleep`` likewise.
    """

    def __init__(
        self,
        db: Database,
        *,
        throttle_at: float = 80.0,
        max_pacing_delay: float = 10.0,
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 <= throttle_at < 100:
            raise ValueError("throttle_at must be in [0, 100)")
        if max_pacing_delay < 0 or poll_interval <= 0:
            raise ValueError("max_pacing_delay must be >= 0 and poll_interval > 0")
        self.db = db
        self.throttle_at = throttle_at
        self.max_pacing_delay = max_pacing_delay
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    def pacing_delay(self, usage_pct: float) -> float:
        """Seconds a call waits at ``usage_pct``: 0 below ``throttle_at``, linear up to 100 %."""
        if not self.throttle_at <= usage_pct < 100:
            return 0.0
        return (usage_pct - self.throttle_at) / (100 - self.throttle_at) * self.max_pacing_delay

    def acquire(self, scope: str) -> float:
        """Block until a call on ``scope`` is allowed; return the seconds waited.

        Waits while the scope is blocked (re-reading the row after every slice), then paces by
        the latest usage. The wait is added to the current :class:`RunStats`, if any.
        """
        start = self._clock()
        paced = 0.0
        slept = announced = False
        while True:
            status = self.status(scope)
            until = status.blocked_until
            blocked = until.timestamp() - self._clock() if until is not None else 0.0
            if blocked > 0:
                if not announced:
                    log.info("quota scope %s blocked until %s (%s)", scope, until, status.reason)
                    announced = True
                step = min(self.poll_interval, blocked)
            else:
                step = min(self.poll_interval, self.pacing_delay(status.usage_pct) - paced)
                if step <= 0:
                    break
                paced += step
            self._sleep(step)
            slept = True
        waited = max(0.0, self._clock() - start) if slept else 0.0
        stats = _stats.get()
        if stats is not None and waited:
            stats.add(wait=waited)
        return waited

    def report_usage(
        self, scope: str, usage_pct: float, *, regain_after: float | None = None, reason: str | None = None
    ) -> None:
        """Record the latest usage (negatives count as 0); at 100 % or with a regain hint (seconds,
        at most :data:`MAX_BLOCK_SECONDS`), block the scope too, by default for a minute."""
        usage = _finite(usage_pct, "usage_pct")
        block: float | None = None
        if regain_after is not None:
            block = _finite(regain_after, "regain_after", MAX_BLOCK_SECONDS)
        elif usage >= 100:
            block = DEFAULT_BLOCK_SECONDS
        self._upsert(scope, usage, block, reason)

    def report_block(self, scope: str, retry_after: float, *, reason: str) -> None:
        """Block ``scope`` for ``retry_after`` seconds (an existing longer block stays; at most a day)."""
        self._upsert(scope, None, _finite(retry_after, "retry_after", MAX_BLOCK_SECONDS), reason)

    def _upsert(self, scope: str, usage: float | None, block: float | None, reason: str | None) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        until = None if block is None else now + timedelta(seconds=block)
        values: dict[str, Any] = {"scope": scope, "blocked_until": until, "reason": reason}
        if usage is not None:
            values["usage_pct"] = usage
        stmt = insert(quota_scopes).values(values)
        old, new = quota_scopes.c, stmt.excluded
        updates: dict[str, Any] = {
            "blocked_until": func.greatest(old.blocked_until, new.blocked_until),
            # a block still running (and not outgrown) keeps its reason; otherwise the latest wins
            "reason": case(
                (old.blocked_until > func.coalesce(new.blocked_until, now), old.reason),
                else_=func.coalesce(new.reason, old.reason),
            ),
            "updated_at": func.now(),
        }
        if usage is not None:
            updates["usage_pct"] = new.usage_pct
        with self.db.platform() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[old.scope], set_=updates))
        if block:
            log.info("quota scope %s blocked for %.1fs (%s)", scope, block, reason)

    def status(self, scope: str) -> QuotaStatus:
        """The scope's row (an unknown scope: not blocked, 0 % used)."""
        columns = (quota_scopes.c.blocked_until, quota_scopes.c.usage_pct, quota_scopes.c.reason)
        with self.db.platform() as conn:
            row = conn.execute(select(*columns).where(quota_scopes.c.scope == scope)).first()
        if row is None:
            return QuotaStatus(scope, None, 0.0, None)
        return QuotaStatus(scope, row.blocked_until, float(row.usage_pct), row.reason)

    def clear(self, scope: str) -> None:
        """Forget the scope: lift its block and reset its usage (an operator's action)."""
        with self.db.platform() as conn:
            conn.execute(delete(quota_scopes).where(quota_scopes.c.scope == scope))


# --- context: the current run's stats and the current governor -----------------------------


@contextmanager
def collect_stats() -> Iterator[RunStats]:
    """Count calls and quota waits of this context (one run) into a fresh :class:`RunStats`."""
    stats = RunStats()
    token = _stats.set(stats)
    try:
        yield stats
    finally:
        _stats.reset(token)


def current_stats() -> RunStats | None:
    """The stats being collected in this context, if any."""
    return _stats.get()


def record_call() -> None:
    """Count one API call in the current stats (nothing happens when none are collected)."""
    stats = _stats.get()
    if stats is not None:
        stats.add(calls=1)


@contextmanager
def use_governor(governor: QuotaGovernor | None) -> Iterator[QuotaGovernor | None]:
    """Make ``governor`` the current one in this context (for provider code deep in a client)."""
    token = _governor.set(governor)
    try:
        yield governor
    finally:
        _governor.reset(token)


def current_governor() -> QuotaGovernor | None:
    """The governor installed by :func:`use_governor` in this context, if any."""
    return _governor.get()


@contextmanager
def guarded_call(scope: str | None) -> Iterator[None]:
    """Wrap one API call: wait for ``scope`` on the current governor, then count the call.

    Exceptions from the call pass through unchanged (mapping them is the client's job).
    """
    governor = _governor.get()
    if governor is not None and scope is not None:
        governor.acquire(scope)
    record_call()
    yield


# --- httpx integration and usage parsers ---------------------------------------------------


def httpx_event_hooks(
    scope: str, usage: Callable[[httpx.Response], UsageSignal | None] | None = None
) -> dict[str, list[Callable[..., Any]]]:
    """Event hooks for ``httpx.Client(event_hooks=...)`` governing every request on ``scope``.

    Before a request: acquire on the current governor (if any) and count the call. After a
    response: report ``usage(response)`` and, on a 429 with ``Retry-After``, block the scope.
    A failing ``usage`` parser is logged, never raised. Sync clients only.
    """

    def on_request(request: httpx.Request) -> None:
        with guarded_call(scope):
            pass

    def on_response(response: httpx.Response) -> None:
        governor = _governor.get()
        if governor is None:
            return
        signal: UsageSignal | None = None
        if usage is not None:
            try:
                signal = usage(response)
            except Exception:
                log.warning("usage parser for quota scope %s failed; ignored", scope, exc_info=True)
        if signal is not None:
            governor.report_usage(
                scope, signal.usage_pct, regain_after=signal.regain_after, reason=signal.reason
            )
        retry = _retry_after_seconds(response) if response.status_code == 429 else None
        if retry is not None:
            governor.report_block(scope, retry, reason=f"HTTP 429, Retry-After {retry:g}s")

    return {"request": [on_request], "response": [on_response]}


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` (delta seconds or HTTP date, relative to the ``Date`` header) in seconds."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw).timestamp()
            date = response.headers.get("Date")
            seconds = when - (parsedate_to_datetime(date).timestamp() if date else time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_usage(response: httpx.Response) -> UsageSignal | None:
    """A usage parser for plain HTTP APIs: a 429 with ``Retry-After`` means 100 %, regain then."""
    if response.status_code != 429 or (seconds := _retry_after_seconds(response)) is None:
        return None
    return UsageSignal(100.0, regain_after=seconds, reason=f"HTTP 429, Retry-After {seconds:g}s")


_META_HEADERS = (
    "X-App-Usage",
    "X-Ad-Account-Usage",
    "X-Business-Use-Case-Usage",
    "X-FB-Ads-Insights-Throttle",
)
_META_PERCENTS = ("call_count", "total_cputime", "total_time", "acc_id_util_pct", "app_id_util_pct")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _objects(data: object) -> Iterator[dict[str, Any]]:
    """The objects of a usage header: the header itself and the entries of a BUC map of lists."""
    if isinstance(data, dict):
        yield data
        for value in data.values():
            if isinstance(value, list):
                yield from (entry for entry in value if isinstance(entry, dict))


def meta_usage(response: httpx.Response) -> UsageSignal | None:
    """Meta Graph usage from ``X-App-Usage``, ``X-Ad-Account-Usage``, ``X-Business-Use-Case-Usage``
    (and ``X-FB-Ads-Insights-Throttle``): the highest percentage, and the longest
    ``estimated_time_to_regain_access`` (minutes) as seconds. Malformed headers are ignored."""
    usage: float | None = None
    regain = 0.0
    worst = ""
    for header in _META_HEADERS:
        raw = response.headers.get(header)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        for obj in _objects(data):
            kind = f"{obj['type']} " if isinstance(obj.get("type"), str) else ""
            for key in _META_PERCENTS:
                pct = _number(obj.get(key))
                if pct is not None and (usage is None or pct > usage):
                    usage, worst = pct, f"{header} {kind}{key}"
            minutes = _number(obj.get("estimated_time_to_regain_access"))
            if minutes is not None and math.isfinite(minutes * 60) and minutes * 60 > regain:
                regain = minutes * 60
    if usage is None and not regain:
        return None
    reason = f"Meta {worst} at {usage:g}%" if usage is not None else "Meta usage"
    if regain:
        reason += f", regain access in {regain / 60:g} min"
    return UsageSignal(usage or 0.0, regain_after=regain or None, reason=reason)
