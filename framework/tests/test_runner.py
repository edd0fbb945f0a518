"""``adconnect run`` (what ``make up`` starts) as a real process: starts, beats, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adconnect.db.schema import runner_heartbeats


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADCONNECT_")}
    env.update(extra)
    return env


class Runner:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adconnect", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not seen; output:\n{''.join(self.lines)}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        out, _ = self.process.communicate(timeout=60)
        self.lines.append(out)
        return self.process.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _beats(db) -> int:
    with db.platform() as conn:
        return conn.execute(select(func.count()).select_from(runner_heartbeats)).scalar_one()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_beats_and_stops_cleanly(adconnect_env, adconnect_db, sig):
    runner = Runner(
        _env(
            ADCONNECT_DATABASE_URL=adconnect_env.database_url.get_secret_value(),
            ADCONNECT_DATA_DIR=str(adconnect_env.data_dir),
            ADCONNECT_MASTER_KEY=adconnect_env.master_key.get_secret_value(),
            ADCONNECT_HEARTBEAT_SECONDS="0.2",
        )
    )
    try:
        runner.wait_for("Press Ctrl-C")
        runner.wait_for("heartbeat 2:")
        assert _beats(adconnect_db) == 1
    finally:
        code = runner.stop(sig)
    assert code == 0, runner.output
    assert "runner stopped." in runner.output
    assert f"data directory: {adconnect_env.data_dir}" in runner.output
    assert "external server" in runner.output and "password" not in runner.output.lower()
    assert _beats(adconnect_db) == 0


@pytest.mark.slow
def test_make_up_twice_on_the_embedded_server_keeps_the_data(tmp_path: Path):
    env = _env(ADCONNECT_DATA_DIR=str(tmp_path / "data"), ADCONNECT_HEARTBEAT_SECONDS="0.5")
    first = Runner(env)
    try:
        first.wait_for("Press Ctrl-C", timeout=120)
        assert "embedded PostgreSQL" in first.output
        assert str(tmp_path / "data" / "pgdata") in first.output
        created = subprocess.run(
            [sys.executable, "-m", "adconnect", "tenants", "create", "Kept Tenant"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert created.returncode == 0, created.stderr
    finally:
        assert first.stop() == 0, first.output
    pgdata = tmp_path / "data" / "pgdata"
    deadline = time.monotonic() + 30
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (pgdata / "postmaster.pid").exists(), "the embedded server kept running after Ctrl-C"

    second = Runner(env)
    try:
        second.wait_for("Press Ctrl-C", timeout=120)
        assert "migrated from" not in second.output  # same database, already at head
        listed = subprocess.run(
            [sys.executable, "-m", "adconnect", "tenants", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert [t["name"] for t in json.loads(listed.stdout)] == ["Kept Tenant"]
    finally:
        assert second.stop() == 0, second.output
    assert (tmp_path / "data" / "master.key").stat().st_mode & 0o077 == 0


# --- several replicas: one leader, taken over within seconds ------------------------------


def _pid_of(instance_id: str | None) -> int | None:
    """Runner instance ids are ``<host>-<pid>-<random>``."""
    return int(instance_id.rsplit("-", 2)[1]) if instance_id else None


def test_one_leader_among_replicas_and_a_standby_takes_over_when_it_is_killed(adconnect_env, adconnect_db):
    from adconnect.scheduling.leader import current_leader
    from adconnect.testing.runners import RunnerProcess, runner_env

    env = runner_env(
        ADCONNECT_DATABASE_URL=adconnect_env.database_url.get_secret_value(),
        ADCONNECT_DATA_DIR=str(adconnect_env.data_dir),
        ADCONNECT_MASTER_KEY=adconnect_env.master_key.get_secret_value(),
        ADCONNECT_HEARTBEAT_SECONDS="0.3",
        ADCONNECT_LEADER_POLL_SECONDS="0.3",
    )
    with RunnerProcess(env, label="first") as first, RunnerProcess(env, label="second") as second:
        runners = {first.pid: first, second.pid: second}
        for runner in runners.values():
            runner.wait_for("heartbeat 3:")
        assert first.count("became the leader") + second.count("became the leader") == 1
        leader = runners[_pid_of(current_leader(adconnect_db))]  # type: ignore[index]
        standby = second if leader is first else first
        assert leader.count("became the leader") == 1
        assert "; standby," in standby.output and "; leader," in leader.output

        leader.kill()
        killed_at = time.monotonic()
        standby.wait_for("became the leader", timeout=10)
        took = time.monotonic() - killed_at
        assert took < 5, f"the standby took {took:.1f}s to take over"
        assert _pid_of(current_leader(adconnect_db)) == standby.pid

        assert standby.stop(signal.SIGTERM) == 0, standby.output
        assert "is no longer the leader: stopping" in standby.output
        assert current_leader(adconnect_db) is None
        assert _beats(adconnect_db) == 1  # the killed runner's row stays; the stopped one's is gone
