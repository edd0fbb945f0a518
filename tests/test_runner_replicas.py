"""Several ``adconnect run`` replicas on one database, as real processes, syncing demo_ads from its
emulator: every due job runs once in effect when the leader is SIGKILLed mid-way, and a replica
killed in the middle of a job has that job finished by another - nothing lost, nothing duplicated.

Schedules are made due "now" the way a leader change sees them: each connection's schedule fired
a minute ago (a daily cron at that minute) and its last recorded fire is an hour old, so whoever
leads catches that fire up exactly once.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from adconnect.connections import ConnectionRecord, ConnectionService
from adconnect.db.database import Database
from adconnect.db.schema import schedule_fires, schedules
from adconnect.keyring import MasterKeyring
from adconnect.plugins import load_plugins
from adconnect.scheduling.leader import current_leader
from adconnect.scheduling.plan import job_key
from adconnect.tenants import Tenant, create_tenant, set_provider_enabled
from adconnect.testing.flows import connect
from adconnect.testing.runners import RunnerProcess, runner_env
from adconnect_demo_ads.emulator import DemoAdsEmulator
from adconnect_demo_ads.provider import DemoAdsProvider
from adconnect_demo_ads.settings import DemoAdsSettings

REDIRECT = "http://127.0.0.1:8765/oauth/callback"
RAW = 'raw."demo_ads__campaign_daily"'
ROUTE = "GET /v1/accounts/{account_id}/reports/campaign_daily"
ACCOUNTS = ("1001", "1002")  # the emulator's accounts; raw rows are keyed per tenant and account
FAST = {  # seconds
    "ADCONNECT_HEARTBEAT_SECONDS": "0.5",
    "ADCONNECT_LEADER_POLL_SECONDS": "0.3",
    "ADCONNECT_SCHEDULE_REFRESH_SECONDS": "0.5",
    "ADCONNECT_WORKER_HEARTBEAT_SECONDS": "0.5",
    "ADCONNECT_STALLED_WORKER_SECONDS": "3",
    "ADCONNECT_WORKER_POLL_SECONDS": "0.5",
    "ADCONNECT_MISFIRE_GRACE_SECONDS": "900",
}


@dataclass
class Fleet:
    db: Database
    emulator: DemoAdsEmulator
    service: ConnectionService
    env: dict[str, str]
    connections: list[tuple[Tenant, ConnectionRecord]] = field(default_factory=list)
    runners: list[RunnerProcess] = field(default_factory=list)

    def tenants(self, count: int) -> None:
        """``count`` tenants, each with one demo_ads connection per emulator account (real OAuth)."""
        for n in range(count):
            tenant = create_tenant(self.db, f"Replica Tenant {n:03d}")
            set_provider_enabled(self.db, tenant, "demo_ads", True)
            for account in ACCOUNTS:
                record = connect(
                    self.service,
                    tenant.id,
                    "demo_ads",
                    redirect_uri=REDIRECT,
                    account=account,
                    name=f"acct-{account}",
                )
                self.connections.append((tenant, record))

    def make_due(self) -> None:
        """Every connection's ``hourly`` schedule fired a minute ago; its last recorded fire is older."""
        now = dt.datetime.now(dt.UTC)
        fired = (now - dt.timedelta(minutes=1)).astimezone(ZoneInfo("America/Jamaica"))
        cron = f"{fired.minute} {fired.hour} * * *"
        by_tenant: dict[UUID, list[ConnectionRecord]] = {}
        for tenant, record in self.connections:
            by_tenant.setdefault(tenant.id, []).append(record)
        for tenant_id, records in by_tenant.items():
            with self.db.tenant(tenant_id) as conn:
                for record in records:
                    stmt = insert(schedule_fires).values(
                        tenant_id=tenant_id,
                        job_key=job_key(record.id, "hourly"),
                        last_fired_at=now - dt.timedelta(hours=1),
                    )
                    conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=["tenant_id", "job_key"],
                            set_={"last_fired_at": stmt.excluded.last_fired_at},
                        )
                    )
                conn.execute(
                    insert(schedules).values(
                        tenant_id=tenant_id,
                        provider_id="demo_ads",
                        name="hourly",
                        cron=cron,
                        timezone="America/Jamaica",
                    )
                )

    def start(self, label: str, **extra: str) -> RunnerProcess:
        runner = RunnerProcess({**self.env, **extra}, label=label)
        self.runners.append(runner)
        return runner

    def leader(self) -> RunnerProcess:
        instance = current_leader(self.db)
        assert instance is not None, "no leader"
        pid = int(instance.rsplit("-", 2)[1])
        (found,) = [r for r in self.runners if r.pid == pid]
        return found

    def scalar(self, sql: str) -> int:
        with self.db.admin() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def succeeded(self) -> int:
        return self.scalar(
            "SELECT count(DISTINCT connection_id) FROM adconnect.sync_runs "
            "WHERE trigger = 'schedule' AND status = 'succeeded'"
        )

    def queued(self) -> int:
        return self.scalar("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")

    def check_every_connection_synced_exactly(self) -> Counter[UUID]:
        """Raw rows == the emulator's ground truth for each connection's synced window; states saved.

        Returns how many successful scheduled runs each connection had.
        """
        with self.db.admin() as conn:
            runs = conn.execute(
                # a run killed after committing a chunk leaves correct rows: windows start with any run
                text(
                    "SELECT connection_id, min(window_start) AS start, "
                    "max(window_end) FILTER (WHERE status = 'succeeded') AS end, "
                    "count(*) FILTER (WHERE status = 'succeeded') AS n "
                    "FROM adconnect.sync_runs WHERE trigger = 'schedule' GROUP BY connection_id"
                )
            ).all()
            raw = conn.execute(
                text(
                    "SELECT tenant_id, connection_id, account_id, campaign_id, date, impressions, clicks, "
                    f"spend_micros FROM {RAW}"
                )
            ).all()
            states = {
                r.connection_id: r.state
                for r in conn.execute(
                    text(
                        "SELECT connection_id, state FROM adconnect.stream_states "
                        "WHERE stream = 'campaign_daily'"
                    )
                )
            }
            running = conn.execute(text("SELECT count(*) FROM adconnect.sync_runs WHERE status = 'running'"))
            assert running.scalar_one() == 0, "a run was left 'running'"
        windows = {r.connection_id: (r.start, r.end) for r in runs}
        counts = Counter({r.connection_id: r.n for r in runs})
        loaded: dict[tuple[UUID, str], dict[tuple[str, str], tuple[int, int, int]]] = {}
        owners: dict[tuple[UUID, str], set[UUID]] = {}
        for r in raw:
            rows = loaded.setdefault((r.tenant_id, r.account_id), {})
            key = (r.campaign_id, r.date.isoformat())
            assert key not in rows, f"duplicate raw row {key}"
            rows[key] = (r.impressions, r.clicks, r.spend_micros)
            owners.setdefault((r.tenant_id, r.account_id), set()).add(r.connection_id)
        assert len(raw) == sum(len(v) for v in loaded.values())
        for tenant, record in self.connections:
            assert counts[record.id], f"{tenant.slug}/{record.name} never synced on schedule"
            start, end = windows[record.id]
            assert record.external_account_id is not None
            truth = {
                (row["campaign_id"], row["date"]): (row["impressions"], row["clicks"], row["spend_micros"])
                for row in self.emulator.rows(
                    record.external_account_id, start.date(), end.date() - dt.timedelta(days=1)
                )
            }
            assert loaded.get((tenant.id, record.external_account_id)) == truth, (
                f"{tenant.slug}/{record.name}"
            )
            assert owners[tenant.id, record.external_account_id] == {record.id}
            assert states.get(record.id, {}).get("window_end"), f"no state saved for {record.name}"
        assert len(loaded) == len(self.connections)
        return counts


def _wait(predicate: Callable[[], bool], timeout: float, what: str, runners: list[RunnerProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            outputs = "\n".join(f"--- {r.label}\n{r.output[-4000:]}" for r in runners)
            raise AssertionError(f"timed out waiting for {what}\n{outputs}")
        time.sleep(0.2)


@pytest.fixture
def fleet(adconnect_env, adconnect_db) -> Iterator[Fleet]:
    with DemoAdsEmulator(seed=21, redirect_uris=(REDIRECT,)) as emulator:
        settings = DemoAdsSettings(
            api_url=emulator.url,
            client_id=emulator.oauth.client_id,
            client_secret=emulator.oauth.client_secret,
            redirect_uri=REDIRECT,
        )
        host = load_plugins(entry_points=False, extra=[DemoAdsProvider(settings)])
        service = ConnectionService.create(adconnect_db, host, MasterKeyring.from_settings(adconnect_env))
        env = runner_env(
            ADCONNECT_DATABASE_URL=adconnect_env.database_url.get_secret_value(),
            ADCONNECT_DATA_DIR=str(adconnect_env.data_dir),
            ADCONNECT_MASTER_KEY=adconnect_env.master_key.get_secret_value(),
            ADCONNECT_DEMO_ADS_API_URL=emulator.url,
            ADCONNECT_DEMO_ADS_CLIENT_ID=emulator.oauth.client_id,
            ADCONNECT_DEMO_ADS_CLIENT_SECRET=emulator.oauth.client_secret,
            ADCONNECT_DEMO_ADS_REDIRECT_URI=REDIRECT,
            **FAST,
        )
        found = Fleet(adconnect_db, emulator, service, env)
        try:
            yield found
        finally:
            for runner in found.runners:
                runner.__exit__()


def test_three_replicas_run_200_due_jobs_once_in_effect_when_the_leader_is_killed(fleet):
    fleet.tenants(100)  # x 2 connections
    fleet.make_due()
    due = dt.datetime.now(dt.UTC).isoformat()
    runners = [fleet.start(f"runner-{n}") for n in range(3)]
    for runner in runners:
        runner.wait_for("queue worker started")
    _wait(lambda: fleet.succeeded() >= 60, 90, "60 syncs", runners)

    leader = fleet.leader()
    survivors = [r for r in runners if r is not leader]
    leader.kill()
    killed_at = time.monotonic()
    _wait(lambda: any(r.count("became the leader") for r in survivors), 10, "a new leader", runners)
    assert time.monotonic() - killed_at < 5

    _wait(lambda: fleet.succeeded() == 200 and fleet.queued() == 0, 120, "every job done", runners)
    counts = fleet.check_every_connection_synced_exactly()
    assert len(counts) == 200
    # "once in effect": a re-run happens only for a job caught by the kill (re-fired or recovered)
    assert sum(counts.values()) - 200 <= 3, counts.most_common(5)
    # every job's fire is recorded (the catch-up of the next leader relies on it)
    assert fleet.scalar(f"SELECT count(*) FROM adconnect.schedule_fires WHERE last_fired_at > '{due}'") == 200
    for runner in survivors:
        assert runner.stop(signal.SIGTERM) == 0, runner.output[-3000:]
    assert fleet.scalar("SELECT count(*) FROM adconnect.runner_heartbeats") == 1  # the killed one's


def test_a_replica_killed_mid_job_has_its_job_finished_by_another(fleet):
    fleet.tenants(5)  # x 2 connections
    # the first runner dies (SIGKILL) in its first chunk, after staging rows, before moving them in
    doomed = fleet.start("doomed", ADCONNECT_CRASHPOINT="before_move:1")
    doomed.wait_for("became the leader")
    other = fleet.start("other")
    other.wait_for("queue worker started")
    fleet.make_due()
    _wait(lambda: doomed.process.poll() is not None, 30, "the crash", [doomed, other])
    assert doomed.process.returncode == -signal.SIGKILL

    other.wait_for("became the leader", timeout=10)
    _wait(lambda: fleet.succeeded() == 10 and fleet.queued() == 0, 60, "every job done", [doomed, other])
    other.wait_for("was left by a dead worker", timeout=10)
    assert fleet.scalar("SELECT count(*) FROM adconnect.sync_runs WHERE error_class = 'WorkerLostError'") >= 1
    counts = fleet.check_every_connection_synced_exactly()
    assert sum(counts.values()) - 10 <= 2, counts
    assert other.stop(signal.SIGINT) == 0, other.output[-3000:]


def test_a_stopping_runner_finishes_its_job_and_a_second_signal_abandons_it_safely(fleet):
    fleet.tenants(1)  # x 2 connections
    fleet.emulator.inject(ROUTE, delay=1.5, times=None)  # every data call is slow: jobs take seconds
    running = "SELECT count(*) FROM adconnect.sync_runs WHERE status = 'running'"
    one_at_a_time = {"ADCONNECT_WORKER_CONCURRENCY": "1"}

    first = fleet.start("first", **one_at_a_time)
    first.wait_for("became the leader")
    fleet.make_due()
    _wait(lambda: fleet.scalar(running) == 1, 30, "a running job", [first])
    first.send(signal.SIGTERM)  # stop: the running job finishes, the other one waits in the queue
    first.wait_for("waiting for 1 running sync job(s) to finish")
    assert first.wait(timeout=30) == 0, first.output[-3000:]
    assert fleet.succeeded() == 1 and fleet.scalar(running) == 0 and fleet.queued() == 1

    second = fleet.start("second", **one_at_a_time)
    _wait(lambda: fleet.scalar(running) == 1, 30, "the queued job running", [second])
    second.send(signal.SIGTERM)
    second.wait_for("waiting for 1 running sync job(s) to finish")
    second.send(signal.SIGINT)  # again: abandon it
    assert second.wait(timeout=5) == 130, second.output[-3000:]
    assert "abandoning 1 running sync job(s)" in second.output

    third = fleet.start("third")
    _wait(lambda: fleet.succeeded() == 2 and fleet.queued() == 0, 60, "the abandoned job done", [third])
    assert fleet.scalar("SELECT count(*) FROM adconnect.sync_runs WHERE error_class = 'WorkerLostError'") == 1
    fleet.check_every_connection_synced_exactly()
    assert third.stop() == 0
    assert fleet.scalar("SELECT count(*) FROM adconnect.runner_heartbeats") == 0
