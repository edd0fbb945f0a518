"""Scheduling in one process, on real PostgreSQL: crontab semantics, effective schedules from the
database, the leader's reconcile and catch-up, the queue's coalescing, retries and recovery.

The provider is a small in-memory one with two default schedules; the queue is real procrastinate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from procrastinate.worker import Worker
from pydantic import BaseModel
from sqlalchemy import insert, select, text, update

import adconnect
from adconnect import (
    AuthKind,
    Provider,
    ReadRequest,
    ReauthRequiredError,
    RecordBatch,
    RetryableProviderError,
    ScheduleSpec,
    StreamSpec,
    hookimpl,
)
from adconnect.connections import ConnectionService
from adconnect.db.database import Database
from adconnect.db.schema import connections, schedule_fires, schedules, sync_runs
from adconnect.errors import ConfigurationError
from adconnect.keyring import MasterKeyring, generate_key
from adconnect.plugins import PluginHost, load_plugins
from adconnect.quota import QuotaGovernor
from adconnect.scheduling.cron import build_trigger, next_fire_times
from adconnect.scheduling.plan import compute_schedules, job_key
from adconnect.scheduling.queue import (
    TaskContext,
    defer_sync,
    install_task_context,
    make_queue_app,
    queue_conninfo,
)
from adconnect.scheduling.scheduler import SyncScheduler
from adconnect.scheduling.worker import QueueWorker
from adconnect.settings import FrameworkSettings
from adconnect.sync.engine import SyncEngine
from adconnect.tenants import Tenant, create_tenant, set_provider_enabled

JAMAICA = ZoneInfo("America/Jamaica")


# --- a provider with schedules ---------------------------------------------------------------


class Day(BaseModel):
    day: dt.date
    clicks: int


class Account(BaseModel):
    account: str
    name: str


class ClockProvider(Provider):
    """Two streams, two default schedules; ``fail`` makes reads raise a chosen error."""

    provider_id = "clock_ads"
    display_name = "Clock Ads"
    contract_version = adconnect.CONTRACT_VERSION
    auth_kind = AuthKind.API_KEY
    default_schedules = (
        ScheduleSpec(name="hourly", cron="0 6-22 * * *"),
        ScheduleSpec(name="nightly", cron="30 2 * * *", streams=("accounts",)),
    )
    fail: type[Exception] | None = None

    @hookimpl
    def adconnect_declare_streams(self) -> list[StreamSpec]:
        return [
            StreamSpec(name="daily", record_model=Day, primary_key=("day",), cursor_field="day"),
            StreamSpec(name="accounts", record_model=Account, primary_key=("account",)),
        ]

    @hookimpl
    def adconnect_read_stream(self, request: ReadRequest) -> Iterator[RecordBatch]:
        if self.fail is RetryableProviderError:
            raise RetryableProviderError("the API is having a moment", retry_after=None)
        if self.fail is ReauthRequiredError:
            raise ReauthRequiredError("the token was revoked")
        if request.stream == "accounts":
            yield RecordBatch(stream="accounts", records=({"account": "a1", "name": "One"},))
            return
        day = request.window.start
        while day < request.window.end:
            yield RecordBatch(stream="daily", records=({"day": day.date(), "clicks": day.day},))
            day += dt.timedelta(days=1)


@pytest.fixture
def clock() -> ClockProvider:
    return ClockProvider()


@pytest.fixture
def host(clock: ClockProvider) -> PluginHost:
    return load_plugins(entry_points=False, extra=[clock])


def _connection(
    db: Database, tenant: Tenant, name: str, *, status: str = "active", account: str | None = "acct-1"
) -> uuid.UUID:
    with db.tenant(tenant.id) as conn:
        return conn.execute(
            insert(connections)
            .values(
                tenant_id=tenant.id,
                provider_id="clock_ads",
                name=name,
                status=status,
                external_account_id=account,
            )
            .returning(connections.c.id)
        ).scalar_one()


def _override(db: Database, tenant: Tenant, name: str, cron: str, **values: object) -> None:
    with db.tenant(tenant.id) as conn:
        conn.execute(
            insert(schedules).values(
                tenant_id=tenant.id, provider_id="clock_ads", name=name, cron=cron, **values
            )
        )


def _jobs(db: Database) -> list[dict[str, object]]:
    with db.admin() as conn:
        rows = conn.execute(
            text(
                "SELECT id, status::text, args, lock, queueing_lock, attempts, scheduled_at "
                "FROM procrastinate_jobs ORDER BY id"
            )
        ).mappings()
        return [dict(r) for r in rows]


# --- crontab semantics -----------------------------------------------------------------------


def test_monday_to_friday_fires_monday_to_friday_only_in_jamaica():
    start = dt.datetime(2026, 11, 1, tzinfo=JAMAICA)  # a Sunday
    fires = next_fire_times(build_trigger("0 6 * * 1-5", "America/Jamaica"), start, 15)
    assert {f.strftime("%a") for f in fires} == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert all(f.hour == 6 and f.minute == 0 and f.utcoffset() == dt.timedelta(hours=-5) for f in fires)
    assert fires[0] == dt.datetime(2026, 11, 2, 6, tzinfo=JAMAICA)  # Monday, not Tuesday
    # the pitfall this avoids: APScheduler 3.x's own from_crontab counts 0 as Monday
    naive = next_fire_times(CronTrigger.from_crontab("0 6 * * 1-5", timezone=JAMAICA), start, 5)
    assert [f.strftime("%a") for f in naive] == ["Tue", "Wed", "Thu", "Fri", "Sat"]
    # day names, 0 and 7 (Sunday), steps and lists keep crontab's meaning
    assert str(build_trigger("0 6 * * mon-fri", "UTC")) == str(build_trigger("0 6 * * 1-5", "UTC"))
    weekend = next_fire_times(build_trigger("0 6 * * 0,6", "UTC"), start, 4)
    assert {f.strftime("%a") for f in weekend} == {"Sat", "Sun"}
    assert {f.strftime("%a") for f in next_fire_times(build_trigger("0 6 * * 5-7", "UTC"), start, 6)} == {
        "Fri",
        "Sat",
        "Sun",
    }
    every_other = next_fire_times(build_trigger("0 6 * * */2", "UTC"), start, 8)
    assert {f.strftime("%a") for f in every_other} == {"Sun", "Tue", "Thu", "Sat"}


def test_day_of_month_or_day_of_week_as_crontab_does():
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    fires = next_fire_times(build_trigger("0 6 1 * mon", "UTC"), start, 4)
    assert [f.strftime("%a %d") for f in fires] == ["Sun 01", "Mon 02", "Mon 09", "Mon 16"]


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("0 6 * *", "UTC", "invalid cron '0 6 * *': it has 4 field(s), not 5"),
        ("0 25 * * *", "UTC", "invalid cron '0 25 * * *'"),
        ("0 6 * * 8", "UTC", "'8' is not a day of the week"),
        ("0 6 * * fri-mon", "UTC", "runs backwards"),
        ("0 6 * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_crons_and_zones_say_what_is_wrong(cron, zone, message):
    with pytest.raises(ConfigurationError) as caught:
        build_trigger(cron, zone)
    assert message in caught.value.user_message
    assert "\n" not in caught.value.user_message


# --- effective schedules ---------------------------------------------------------------------


def test_effective_schedules_follow_overrides_enablement_and_status(adconnect_db, host):
    db = adconnect_db
    acme, beta = create_tenant(db, "Acme"), create_tenant(db, "Beta")
    set_provider_enabled(db, acme, "clock_ads", True)
    main = _connection(db, acme, "main")
    spare = _connection(db, acme, "spare")
    _connection(db, acme, "expired", status="needs_reauth")
    _connection(db, acme, "unpicked", account=None)
    _connection(db, beta, "main")  # beta never enabled clock_ads
    _override(db, acme, "hourly", "15 * * * *", timezone="UTC")  # tenant-wide
    with db.tenant(acme.id) as conn:
        conn.execute(
            insert(schedules).values(
                tenant_id=acme.id,
                connection_id=main,
                provider_id="clock_ads",
                name="hourly",
                cron="0 6 * * mon-fri",
                timezone="Europe/London",
                streams=["daily"],
            )
        )
        conn.execute(
            insert(schedules).values(
                tenant_id=acme.id,
                connection_id=spare,
                provider_id="clock_ads",
                name="nightly",
                cron="30 2 * * *",
                enabled=False,
            )
        )
    _override(db, acme, "weekly", "0 3 * * sun", timezone="America/Jamaica")  # a new name

    found = {
        (s.tenant_slug, s.connection_name, s.name): s for s in compute_schedules(db, host, "America/Jamaica")
    }
    main_hourly = found["acme", "main", "hourly"]
    assert (main_hourly.source, main_hourly.cron, main_hourly.timezone, main_hourly.streams) == (
        "connection",
        "0 6 * * mon-fri",
        "Europe/London",
        ("daily",),
    )
    spare_hourly = found["acme", "spare", "hourly"]
    assert (spare_hourly.source, spare_hourly.cron, spare_hourly.timezone) == ("tenant", "15 * * * *", "UTC")
    assert spare_hourly.streams == ("daily", "accounts")  # inherited: every stream
    main_nightly = found["acme", "main", "nightly"]
    assert (main_nightly.source, main_nightly.timezone, main_nightly.streams) == (
        "default",
        "America/Jamaica",
        ("accounts",),
    )
    assert found["acme", "spare", "nightly"].inactive_reason == "schedule disabled"
    assert found["acme", "main", "weekly"].source == "tenant" and found["acme", "main", "weekly"].active
    assert found["acme", "expired", "hourly"].inactive_reason == "connection needs_reauth"
    assert found["acme", "unpicked", "hourly"].inactive_reason == "no account selected"
    assert found["beta", "main", "hourly"].inactive_reason == "provider disabled for the tenant"
    active = sorted((s.connection_name, s.name) for s in found.values() if s.active)
    assert active == [
        ("main", "hourly"),
        ("main", "nightly"),
        ("main", "weekly"),
        ("spare", "hourly"),
        ("spare", "weekly"),
    ]
    # next fire in the schedule's own zone
    monday_night = dt.datetime(2026, 11, 2, 23, 0, tzinfo=dt.UTC)
    assert main_hourly.next_fire(monday_night) == dt.datetime(
        2026, 11, 3, 6, 0, tzinfo=ZoneInfo("Europe/London")
    )
    assert found["beta", "main", "hourly"].next_fire(monday_night) is None


# --- the leader's scheduler ------------------------------------------------------------------


@pytest.fixture
def queue(adconnect_db: Database) -> Iterator[QueueWorker]:
    """The queue without a worker: what the leader defers lands in procrastinate_jobs."""
    app = make_queue_app(queue_conninfo(adconnect_db.app_url, application_name="test-queue"))
    worker = QueueWorker(
        app, adconnect_db, name="test", concurrency=0, heartbeat_seconds=1, stalled_seconds=3, poll_seconds=1
    )
    worker.start()
    yield worker
    worker.stop()
    assert worker.join(10)


def _settings(base: FrameworkSettings, **values: object) -> FrameworkSettings:
    return base.model_copy(update=values)


def test_reconcile_follows_the_database_without_a_restart(adconnect_db, adconnect_settings, host, queue):
    db = adconnect_db
    acme = create_tenant(db, "Acme")
    set_provider_enabled(db, acme, "clock_ads", True)
    main = _connection(db, acme, "main")
    other = _connection(db, acme, "other")
    scheduler = SyncScheduler(_settings(adconnect_settings, schedule_refresh_seconds=0.2), db, host, queue)
    scheduler.start()
    try:
        assert set(scheduler.next_runs()) == {
            job_key(c, n) for c in (main, other) for n in ("hourly", "nightly")
        }
        # a job with no fire record gets one now: a leader change before its first fire loses nothing
        with db.tenant(acme.id) as conn:
            assert len(conn.execute(select(schedule_fires)).all()) == 4
        before = scheduler.next_runs()[job_key(main, "hourly")]

        # changes in the database, picked up by the periodic reconcile
        with db.tenant(acme.id) as conn:
            conn.execute(update(connections).where(connections.c.id == other).values(status="needs_reauth"))
            conn.execute(
                insert(schedules).values(
                    tenant_id=acme.id,
                    connection_id=main,
                    provider_id="clock_ads",
                    name="hourly",
                    cron="7 * * * *",  # never the same next fire as the default's full hours
                    timezone="UTC",
                )
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            runs = scheduler.next_runs()
            if (
                set(runs) == {job_key(main, "hourly"), job_key(main, "nightly")}
                and runs[job_key(main, "hourly")] != before
            ):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the reconcile did not pick the changes up: {scheduler.next_runs()}")
        assert runs[job_key(main, "hourly")].minute == 7  # type: ignore[union-attr]

        set_provider_enabled(db, acme, "clock_ads", False)
        report = scheduler.reconcile()
        assert report.removed == 2 and scheduler.next_runs() == {}
        assert _jobs(db) == []  # nothing was due: nothing fired
    finally:
        scheduler.stop()


def test_a_new_leader_fires_a_missed_fire_once_and_the_queue_coalesces(
    adconnect_db, adconnect_settings, host, queue
):
    db = adconnect_db
    acme = create_tenant(db, "Acme")
    set_provider_enabled(db, acme, "clock_ads", True)
    missed, long_ago, fresh = (_connection(db, acme, n) for n in ("missed", "long-ago", "fresh"))
    now = dt.datetime.now(dt.UTC)
    _override(db, acme, "hourly", "* * * * *", timezone="UTC")  # every minute
    _override(db, acme, "nightly", "30 2 * * *", timezone="UTC", enabled=False)
    with db.tenant(acme.id) as conn:
        for connection, when in (
            (missed, now - dt.timedelta(minutes=2)),
            (long_ago, now - dt.timedelta(days=2)),
        ):
            conn.execute(
                insert(schedule_fires).values(
                    tenant_id=acme.id, job_key=job_key(connection, "hourly"), last_fired_at=when
                )
            )
    # the grace is 60 s: "long-ago" missed fires long ago, but also one in the last minute
    settings = _settings(adconnect_settings, misfire_grace_seconds=60)
    scheduler = SyncScheduler(settings, db, host, queue)
    try:
        report = scheduler.start()
        assert report.caught_up == 2
        jobs = _jobs(db)
        assert sorted(j["lock"] for j in jobs) == sorted(
            f"{c}:{s}" for c in (missed, long_ago) for s in ("daily", "accounts")
        )
        assert all(j["lock"] == j["queueing_lock"] and j["status"] == "todo" for j in jobs)
        assert jobs[0]["args"]["trigger"] == "schedule" and jobs[0]["args"]["tenant_id"] == str(acme.id)
        with db.tenant(acme.id) as conn:
            fires = {r.job_key: r.last_fired_at for r in conn.execute(select(schedule_fires))}
        assert fires[job_key(missed, "hourly")] >= now and fires[job_key(long_ago, "hourly")] >= now
        assert fires[job_key(fresh, "hourly")] >= now  # seeded, not fired

        # a second fire while the jobs wait is coalesced into them
        scheduler.fire(job_key(missed, "hourly"))
        assert len(_jobs(db)) == 4
        # the APScheduler jobs start after now: the catch-up is not doubled
        assert all(t is not None and t > now for t in scheduler.next_runs().values())
        assert scheduler.reconcile().caught_up == 0
    finally:
        scheduler.stop()


# --- the task: what is retried, what is not ------------------------------------------------


def _run_queue(db: Database) -> None:
    """A procrastinate worker that stops when the queue is empty."""
    app = make_queue_app(queue_conninfo(db.app_url, application_name="test-worker"))

    async def work() -> None:
        async with app.open_async():
            await Worker(app, wait=False, install_signal_handlers=False, delete_jobs="never").run()

    asyncio.run(work())


@pytest.fixture
def task_context(adconnect_db, adconnect_settings, host) -> Iterator[TaskContext]:
    service = ConnectionService.create(adconnect_db, host, MasterKeyring([generate_key()]))
    engine = SyncEngine(adconnect_db, host, QuotaGovernor(adconnect_db), max_attempts=1)
    context = TaskContext(adconnect_settings, adconnect_db, host, service, engine)
    install_task_context(context)
    yield context
    install_task_context(None)


def test_transient_failures_are_retried_later_and_reauth_is_not(adconnect_db, clock, task_context):
    db = adconnect_db
    acme = create_tenant(db, "Acme")
    set_provider_enabled(db, acme, "clock_ads", True)
    flaky, revoked, healthy = (_connection(db, acme, n) for n in ("flaky", "revoked", "healthy"))
    app = make_queue_app(queue_conninfo(db.app_url))

    async def defer_all() -> None:
        async with app.open_async():
            for connection in (flaky, revoked, healthy):
                await defer_sync(app, acme.id, connection, "daily", "schedule")

    asyncio.run(defer_all())
    by_lock = {}
    for connection, failure in (
        (flaky, RetryableProviderError),
        (revoked, ReauthRequiredError),
        (healthy, None),
    ):
        clock.fail = failure
        # one job at a time, each with its own failure mode
        with db.admin() as conn:
            conn.execute(
                text(
                    "UPDATE procrastinate_jobs SET scheduled_at = CASE WHEN lock = :l THEN NULL "
                    "ELSE now() + interval '1 hour' END WHERE status = 'todo' AND attempts = 0"
                ),
                {"l": f"{connection}:daily"},
            )
        _run_queue(db)
        by_lock = {j["lock"]: j for j in _jobs(db)}
    flaky_job = by_lock[f"{flaky}:daily"]
    assert flaky_job["status"] == "todo" and flaky_job["attempts"] == 1
    assert flaky_job["scheduled_at"] > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)
    assert by_lock[f"{revoked}:daily"]["status"] == "succeeded"  # recorded as a failed run, not retried
    assert by_lock[f"{healthy}:daily"]["status"] == "succeeded"
    with db.tenant(acme.id) as conn:
        runs = {r.connection_id: r for r in conn.execute(select(sync_runs))}
        status = conn.execute(select(connections.c.status).where(connections.c.id == revoked)).scalar_one()
    assert runs[flaky].error_class == "RetryableProviderError" and runs[flaky].trigger == "schedule"
    assert runs[revoked].error_class == "ReauthRequiredError" and status == "needs_reauth"
    assert runs[healthy].status == "succeeded" and runs[healthy].records_read > 0
    assert runs[healthy].job_id == f"procrastinate:{by_lock[f'{healthy}:daily']['id']}"


def test_jobs_of_a_dead_worker_run_again(adconnect_db, queue):
    db = adconnect_db
    acme = create_tenant(db, "Acme")
    lost, covered = _connection(db, acme, "lost"), _connection(db, acme, "covered")
    app = queue.app

    async def claim() -> tuple[int, int, int | None]:
        ids = [await defer_sync(app, acme.id, c, "daily", "schedule") for c in (lost, covered)]
        worker_id = await app.job_manager.register_worker()
        for _ in ids:
            await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
        # while "covered" runs, the next fire queues an equal job
        waiting = await defer_sync(app, acme.id, covered, "daily", "schedule")
        assert ids[0] is not None and ids[1] is not None
        return ids[0], ids[1], waiting

    lost_id, covered_id, waiting_id = queue.call(claim)
    assert waiting_id is not None
    with db.tenant(acme.id) as conn:
        conn.execute(
            insert(sync_runs).values(
                tenant_id=acme.id,
                connection_id=lost,
                provider_id="clock_ads",
                stream="daily",
                status="running",
                trigger="schedule",
                job_id=f"procrastinate:{lost_id}",
            )
        )
    assert queue.recover_stalled() == []  # the worker is alive (fresh heartbeat)

    # the worker dies: its heartbeat goes stale
    with db.admin() as conn:
        conn.execute(text("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"))
    assert sorted(queue.recover_stalled()) == sorted([lost_id, covered_id])
    jobs = {j["id"]: j for j in _jobs(db)}
    assert jobs[lost_id]["status"] == "todo" and jobs[lost_id]["attempts"] == 1
    assert jobs[covered_id]["status"] == "aborted"  # the queued equal job does the work
    assert jobs[waiting_id]["status"] == "todo"
    with db.tenant(acme.id) as conn:
        run = conn.execute(select(sync_runs)).one()
    assert (run.status, run.error_class) == ("failed", "WorkerLostError") and run.finished_at is not None
    with db.admin() as conn:
        assert conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar_one() == 0


def test_queue_conninfo_keeps_a_unix_socket_host_and_pins_the_queue_schema():
    import psycopg.conninfo
    from sqlalchemy.engine import make_url

    embedded = make_url(
        "postgresql+psycopg://adconnect_app@/adconnect?host=/tmp/adconnect-run/sock&port=5433"
    )
    params = psycopg.conninfo.conninfo_to_dict(queue_conninfo(embedded, application_name="w"))
    assert params == {
        "host": "/tmp/adconnect-run/sock",
        "port": "5433",
        "dbname": "adconnect",
        "user": "adconnect_app",
        "application_name": "w",
        "options": "-c search_path=public",
    }
    tcp = make_url("postgresql+psycopg://app:s3cret@db.internal:5432/ads?sslmode=require")
    params = psycopg.conninfo.conninfo_to_dict(queue_conninfo(tcp))
    assert (params["host"], params["password"], params["sslmode"]) == ("db.internal", "s3cret", "require")


def test_a_worker_outside_the_runner_builds_its_task_context_from_the_environment(
    adconnect_env, adconnect_db
):
    from adconnect.scheduling.queue import task_context

    install_task_context(None)
    acme = create_tenant(adconnect_db, "Acme")
    gone = uuid.uuid4()
    app = make_queue_app(queue_conninfo(adconnect_db.app_url))

    async def defer() -> None:
        async with app.open_async():
            await defer_sync(app, acme.id, gone, "daily", "schedule")

    asyncio.run(defer())
    try:
        _run_queue(adconnect_db)
        (job,) = _jobs(adconnect_db)
        assert job["status"] == "succeeded"  # skipped: the connection does not exist
        built = task_context()
        assert built.settings.data_dir == adconnect_env.data_dir
        assert built.db.app_url.database == adconnect_db.app_url.database
    finally:
        task_context().db.close()
        install_task_context(None)
