"""The quota governor against a real PostgreSQL: shared blocks, pacing, run stats, httpx hooks.

A fake clock keeps the arithmetic tests instant; real threads, a second engine (another
replica) and a subprocess (another machine, in effect) prove the budget is shared.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from adconnect.db.database import Database
from adconnect.errors import RetryableProviderError
from adconnect.quota import (
    DEFAULT_BLOCK_SECONDS,
    MAX_BLOCK_SECONDS,
    QuotaGovernor,
    collect_stats,
    current_governor,
    current_stats,
    guarded_call,
    httpx_event_hooks,
    meta_usage,
    record_call,
    retry_after_usage,
    use_governor,
)
from adconnect.testing.emulator import Emulator, Request, route

SCOPE = "meta:app:1234"
OTHER = "google_ads:developer_token:abc"
BUC = (
    '{"1234":[{"type":"ads_insights","call_count":98,"total_cputime":20,"total_time":30,'
    '"estimated_time_to_regain_access":2}]}'
)


class FakeTime:
    """A clock that only moves when someone sleeps; ``on_sleep`` runs after every sleep."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


class PingEmulator(Emulator):
    @route("GET", "/v1/ping")
    def ping(self, request: Request) -> dict:
        return {"ok": True}


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def replica(adconnect_db: Database) -> Iterator[Database]:
    """The same database through another engine, as another runner replica would open it."""
    db = Database(adconnect_db.admin_url, adconnect_db.app_url)
    yield db
    db.close()


def governor(db: Database, fake: FakeTime, **kwargs: float) -> QuotaGovernor:
    return QuotaGovernor(db, clock=fake.clock, sleep=fake.sleep, **kwargs)


def blocked_for(gov: QuotaGovernor, fake: FakeTime, scope: str = SCOPE) -> float:
    until = gov.status(scope).blocked_until
    return 0.0 if until is None else until.timestamp() - fake.now


# --- blocks --------------------------------------------------------------------------------


def test_an_unknown_scope_does_not_wait(adconnect_db: Database, fake: FakeTime) -> None:
    gov = governor(adconnect_db, fake)
    assert gov.acquire(SCOPE) == 0.0
    assert fake.sleeps == []
    assert gov.status(SCOPE).blocked_until is None and gov.status(SCOPE).usage_pct == 0.0


def test_a_block_from_another_replica_holds_calls_until_blocked_until_in_real_time(
    adconnect_db: Database, replica: Database
) -> None:
    writer = QuotaGovernor(adconnect_db, poll_interval=0.05)
    waiters = [QuotaGovernor(replica, poll_interval=0.05), QuotaGovernor(adconnect_db, poll_interval=0.05)]
    writer.report_block(SCOPE, 0.5, reason="Meta code 4")
    first = writer.status(SCOPE).blocked_until
    assert first is not None
    done: list[tuple[float, float]] = []

    def call(gov: QuotaGovernor) -> None:
        waited = gov.acquire(SCOPE)
        done.append((waited, time.time()))

    threads = [threading.Thread(target=call, args=(gov,)) for gov in waiters]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    writer.report_block(SCOPE, 0.8, reason="extended while they wait")
    extended = writer.status(SCOPE).blocked_until
    assert extended is not None and extended > first
    for thread in threads:
        thread.join(timeout=10)
    assert len(done) == 2
    for waited, returned_at in done:
        assert returned_at >= extended.timestamp()
        assert waited >= 0.8


def test_acquire_rereads_the_row_and_honours_a_block_extended_meanwhile(
    adconnect_db: Database, replica: Database, fake: FakeTime
) -> None:
    waiter = governor(replica, fake, poll_interval=0.5)
    other = governor(adconnect_db, fake)
    other.report_block(SCOPE, 2, reason="first")
    fake.on_sleep = lambda: other.report_block(SCOPE, 3, reason="extended") if len(fake.sleeps) == 1 else None
    assert waiter.acquire(SCOPE) == pytest.approx(3.5)
    assert max(fake.sleeps) <= 0.5
    assert waiter.status(SCOPE).reason == "extended"


def test_blocks_never_shrink(adconnect_db: Database, fake: FakeTime) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_block(SCOPE, 300, reason="long")
    gov.report_block(SCOPE, 10, reason="short")
    gov.report_usage(SCOPE, 100)
    gov.report_usage(SCOPE, 50, regain_after=5, reason="hint")
    gov.report_usage(SCOPE, 20, reason="usage only")
    status = gov.status(SCOPE)
    assert blocked_for(gov, fake) == pytest.approx(300)
    assert status.reason == "long" and status.usage_pct == 20
    gov.report_block(SCOPE, 600, reason="longer")
    assert blocked_for(gov, fake) == pytest.approx(600)
    assert gov.status(SCOPE).reason == "longer"


def test_concurrent_reports_from_two_replicas_keep_the_longest_block(
    adconnect_db: Database, replica: Database, fake: FakeTime
) -> None:
    govs = [governor(adconnect_db, fake), governor(replica, fake)]
    durations = [5.0, 90.0, 30.0, 240.0, 1.0, 60.0, 120.0, 15.0]
    threads = [
        threading.Thread(target=govs[i % 2].report_block, args=(SCOPE, d), kwargs={"reason": f"r{d:g}"})
        for i, d in enumerate(durations)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert blocked_for(govs[0], fake) == pytest.approx(240)
    assert govs[1].status(SCOPE).reason == "r240"


def test_report_usage_records_usage_and_blocks_at_the_limit(adconnect_db: Database, fake: FakeTime) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_usage(SCOPE, -3)
    assert gov.status(SCOPE).usage_pct == 0 and gov.status(SCOPE).blocked_until is None
    gov.report_usage(SCOPE, 85, reason="X-App-Usage call_count")
    assert gov.status(SCOPE).usage_pct == 85 and gov.status(SCOPE).blocked_until is None
    gov.report_usage(SCOPE, 100)
    assert blocked_for(gov, fake) == pytest.approx(DEFAULT_BLOCK_SECONDS)
    gov.report_usage(OTHER, 40, regain_after=90, reason="RESOURCE_TEMPORARILY_EXHAUSTED retry_delay 90s")
    assert blocked_for(gov, fake, OTHER) == pytest.approx(90)
    assert gov.status(OTHER).reason == "RESOURCE_TEMPORARILY_EXHAUSTED retry_delay 90s"
    with pytest.raises(ValueError, match="usage_pct"):
        gov.report_usage(SCOPE, float("nan"))
    gov.report_block(OTHER, 1e12, reason="absurd hint")
    assert blocked_for(gov, fake, OTHER) == pytest.approx(MAX_BLOCK_SECONDS)
    gov.clear(SCOPE)
    assert gov.status(SCOPE).blocked_until is None and gov.acquire(SCOPE) == 0


def test_scopes_are_independent(adconnect_db: Database, fake: FakeTime) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_block(SCOPE, 120, reason="Meta app limit")
    gov.report_usage("meta:app:other", 10)
    assert gov.acquire(OTHER) == 0
    assert gov.acquire("meta:app:other") == 0
    assert fake.sleeps == []
    assert gov.acquire(SCOPE) == pytest.approx(120)


# --- pacing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"), [(0, 0.0), (79.9, 0.0), (80, 0.0), (90, 5.0), (95, 7.5), (99, 9.5)]
)
def test_pacing_is_proportional_between_throttle_at_and_100(
    adconnect_db: Database, fake: FakeTime, usage: float, expected: float
) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_usage(SCOPE, usage)
    assert gov.acquire(SCOPE) == pytest.approx(expected)
    assert sum(fake.sleeps) == pytest.approx(expected)
    assert all(s <= gov.poll_interval + 1e-9 for s in fake.sleeps)


def test_pacing_uses_the_configured_threshold_and_ceiling(adconnect_db: Database, fake: FakeTime) -> None:
    gov = governor(adconnect_db, fake, throttle_at=50, max_pacing_delay=4)
    gov.report_usage(SCOPE, 75)
    assert gov.acquire(SCOPE) == pytest.approx(2.0)


def test_pacing_follows_usage_reported_meanwhile(
    adconnect_db: Database, replica: Database, fake: FakeTime
) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_usage(SCOPE, 99)
    other = governor(replica, fake)
    fake.on_sleep = lambda: other.report_usage(SCOPE, 10)
    assert gov.acquire(SCOPE) == pytest.approx(gov.poll_interval)


def test_at_the_limit_the_block_is_the_wait_and_no_pacing_follows(
    adconnect_db: Database, fake: FakeTime
) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_usage(SCOPE, 120, regain_after=30)
    assert gov.acquire(SCOPE) == pytest.approx(30)
    assert gov.acquire(SCOPE) == 0


# --- run stats and the current governor ----------------------------------------------------


def test_stats_accumulate_calls_and_waits_only_inside_collect_stats(
    adconnect_db: Database, fake: FakeTime
) -> None:
    gov = governor(adconnect_db, fake)
    gov.report_block(SCOPE, 2, reason="outside")
    record_call()
    assert gov.acquire(SCOPE) == pytest.approx(2)
    assert current_stats() is None and current_governor() is None
    with collect_stats() as stats, use_governor(gov):
        assert current_stats() is stats and current_governor() is gov
        gov.report_block(SCOPE, 3, reason="inside")
        with guarded_call(SCOPE):
            pass
        with guarded_call(None):
            pass
        record_call()
        with collect_stats() as inner, guarded_call(OTHER):
            pass
        assert current_stats() is stats
    assert (stats.api_calls, stats.rate_limit_wait_seconds) == (3, pytest.approx(3))
    assert (inner.api_calls, inner.rate_limit_wait_seconds) == (1, 0.0)
    assert current_stats() is None and current_governor() is None


def test_guarded_call_lets_exceptions_through_unchanged(adconnect_db: Database, fake: FakeTime) -> None:
    error = RetryableProviderError("rate limited", retry_after=30)
    with (
        collect_stats() as stats,
        use_governor(governor(adconnect_db, fake)),
        pytest.raises(RetryableProviderError) as caught,
        guarded_call(SCOPE),
    ):
        raise error
    assert caught.value is error
    assert stats.api_calls == 1


def test_without_a_governor_guarded_calls_do_not_wait(adconnect_db: Database, fake: FakeTime) -> None:
    governor(adconnect_db, fake).report_block(SCOPE, 3600, reason="blocked")
    with collect_stats() as stats, guarded_call(SCOPE):
        pass
    assert stats.api_calls == 1 and stats.rate_limit_wait_seconds == 0


# --- httpx hooks against a real local HTTP server ------------------------------------------


def test_a_429_with_retry_after_blocks_the_scope_and_the_next_request_waits(adconnect_db: Database) -> None:
    gov = QuotaGovernor(adconnect_db, poll_interval=0.05)
    hooks = httpx_event_hooks(SCOPE)
    with (
        PingEmulator() as emulator,
        httpx.Client(base_url=emulator.url, event_hooks=hooks) as client,
        use_governor(gov),
        collect_stats() as stats,
    ):
        emulator.inject("GET /v1/ping", status=429, headers={"Retry-After": "2"})
        assert client.get("/v1/ping").status_code == 429
        until = gov.status(SCOPE).blocked_until
        assert until is not None and 1.5 < until.timestamp() - time.time() <= 2.0
        started = time.monotonic()
        assert client.get("/v1/ping").status_code == 200
        elapsed = time.monotonic() - started
        second = emulator.requests[1]
    assert 1.5 < elapsed < 4
    assert second.received_at >= until.timestamp()
    assert stats.api_calls == 2
    assert 1.5 < stats.rate_limit_wait_seconds < 4


def test_meta_usage_headers_are_reported_through_the_hooks(adconnect_db: Database) -> None:
    gov = QuotaGovernor(adconnect_db)
    with (
        PingEmulator() as emulator,
        httpx.Client(base_url=emulator.url, event_hooks=httpx_event_hooks(SCOPE, meta_usage)) as client,
        use_governor(gov),
    ):
        emulator.inject("GET /v1/ping", headers={"X-App-Usage": '{"call_count":12,"total_cputime":3}'})
        assert client.get("/v1/ping").status_code == 200
        assert gov.status(SCOPE).usage_pct == 12 and gov.status(SCOPE).blocked_until is None
        emulator.inject("GET /v1/ping", headers={"X-Business-Use-Case-Usage": BUC})
        assert client.get("/v1/ping").status_code == 200
    status = gov.status(SCOPE)
    assert status.usage_pct == 98
    assert status.blocked_until is not None
    assert status.blocked_until.timestamp() - time.time() == pytest.approx(120, abs=5)
    assert status.reason is not None and "ads_insights" in status.reason


def test_hooks_do_nothing_without_a_governor(adconnect_db: Database, fake: FakeTime) -> None:
    with (
        PingEmulator() as emulator,
        httpx.Client(base_url=emulator.url, event_hooks=httpx_event_hooks(SCOPE, meta_usage)) as client,
    ):
        emulator.inject("GET /v1/ping", status=429, headers={"Retry-After": "60", "X-App-Usage": BUC})
        assert client.get("/v1/ping").status_code == 429
    assert governor(adconnect_db, fake).status(SCOPE).blocked_until is None


# --- parsers -------------------------------------------------------------------------------


def test_meta_usage_parses_real_shaped_headers() -> None:
    signal = meta_usage(httpx.Response(200, headers={"X-Business-Use-Case-Usage": BUC}))
    assert signal is not None
    assert (signal.usage_pct, signal.regain_after) == (98, 120)
    assert signal.reason is not None and "call_count" in signal.reason

    combined = meta_usage(
        httpx.Response(
            400,
            headers={
                "X-App-Usage": '{"call_count":12,"total_cputime":85,"total_time":40}',
                "X-Ad-Account-Usage": '{"acc_id_util_pct":91.5,"reset_time_duration":40,'
                '"ads_api_access_tier":"standard_access"}',
                "X-Business-Use-Case-Usage": '{"1":[{"type":"ads_management","call_count":3,'
                '"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":0}],'
                '"2":[{"type":"ads_insights","call_count":5,"total_cputime":5,"total_time":5,'
                '"estimated_time_to_regain_access":7},{"type":"custom_audience","call_count":1,'
                '"estimated_time_to_regain_access":3}]}',
            },
        )
    )
    assert combined is not None
    assert (combined.usage_pct, combined.regain_after) == (91.5, 7 * 60)

    app_only = meta_usage(httpx.Response(200, headers={"X-App-Usage": '{"call_count":30,"total_time":"44"}'}))
    assert app_only is not None and (app_only.usage_pct, app_only.regain_after) == (44, None)
    assert meta_usage(httpx.Response(200)) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "{",
        "[]",
        "null",
        '"a string"',
        '{"call_count": "lots"}',
        '{"call_count": true}',
        '{"call_count": NaN, "total_time": Infinity}',
        '{"call_count": 1e999}',
        '{"1234": "x"}',
        '{"1234": [1, 2, "a", null]}',
        '{"estimated_time_to_regain_access": -5}',
        '{"estimated_time_to_regain_access": 1e307}',
        "[" * 100_000,
    ],
)
def test_meta_usage_ignores_garbage_and_never_raises(garbage: str) -> None:
    headers = {"X-App-Usage": garbage, "X-Ad-Account-Usage": garbage, "X-Business-Use-Case-Usage": garbage}
    assert meta_usage(httpx.Response(200, headers=headers)) is None
    mixed = meta_usage(httpx.Response(200, headers={**headers, "X-App-Usage": '{"call_count":55}'}))
    assert mixed is not None and mixed.usage_pct == 55


def test_retry_after_usage_reads_seconds_and_http_dates() -> None:
    signal = retry_after_usage(httpx.Response(429, headers={"Retry-After": "2"}))
    assert signal is not None and (signal.usage_pct, signal.regain_after) == (100, 2)
    sent = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    dated = retry_after_usage(
        httpx.Response(
            429,
            headers={
                "Date": format_datetime(sent, usegmt=True),
                "Retry-After": format_datetime(sent + timedelta(seconds=30), usegmt=True),
            },
        )
    )
    assert dated is not None and dated.regain_after == 30
    negative = retry_after_usage(httpx.Response(429, headers={"Retry-After": "-5"}))
    assert negative is not None and negative.regain_after == 0
    assert retry_after_usage(httpx.Response(429)) is None
    assert retry_after_usage(httpx.Response(200, headers={"Retry-After": "2"})) is None
    assert retry_after_usage(httpx.Response(429, headers={"Retry-After": "soon"})) is None


# --- another process -----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy.engine import make_url
    from adconnect.db.database import Database
    from adconnect.quota import QuotaGovernor

    db = Database(make_url(sys.argv[1]), make_url(sys.argv[2]))
    governor = QuotaGovernor(db, poll_interval=0.05)
    governor.status(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()
    waited = governor.acquire(sys.argv[3])
    print(waited, time.time(), flush=True)
    db.close()
    """
)


def test_a_process_with_its_own_governor_sees_a_block_written_by_this_one(adconnect_db: Database) -> None:
    urls = [u.render_as_string(hide_password=False) for u in (adconnect_db.admin_url, adconnect_db.app_url)]
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", CHILD, *urls, SCOPE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        gov = QuotaGovernor(adconnect_db)
        gov.report_block(SCOPE, 1.0, reason="written by the parent")
        until = gov.status(SCOPE).blocked_until
        assert until is not None
        out, err = child.communicate("go\n", timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    waited, returned_at = map(float, out.split())
    assert waited > 0.5
    assert returned_at >= until.timestamp()
