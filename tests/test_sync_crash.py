"""Crash safety: SIGKILL `adconnect sync` at many points of a chunk's life, restart it, and prove the
raw table equals the emulator's ground truth - nothing lost, nothing duplicated, state never
ahead of data.

Kill points are the engine's named crash points (``ADCONNECT_CRASHPOINT=<name>:<n>``: after the
window is prepared, after a batch is staged, in the middle of a COPY, before and after rows move
into the raw table, after the state is written but before the commit, after the commit) at
several counts, plus kills at random moments.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select, text

from adconnect.db.schema import stream_states
from adconnect.keyring import MasterKeyring

from .conftest import RAW, REDIRECT, Demo

SINCE, UNTIL = dt.date(2026, 8, 1), dt.date(2026, 11, 1)  # 92 days: 4 chunks of 30 days
# 4 campaigns x 92 days = 368 rows in pages of 40: 10 batches over the 4 chunks
POINTS = [
    "chunk_begun:1",
    "chunk_begun:3",
    "batch_staged:1",
    "batch_staged:2",
    "batch_staged:5",
    "batch_staged:8",
    "batch_staged:10",
    "mid_copy:1",
    "mid_copy:3",
    "mid_copy:6",
    "mid_copy:9",
    "before_move:1",
    "before_move:2",
    "before_move:4",
    "after_move:1",
    "after_move:3",
    "state_saved:1",
    "state_saved:2",
    "state_saved:4",
    "committed:1",
    "committed:2",
    "committed:3",
]


@pytest.fixture
def crash_demo(adconnect_env, demo: Demo):
    """A tenant connected with the master key the `adconnect sync` subprocesses will use."""
    from adconnect.connections import ConnectionService

    demo.service = ConnectionService.create(demo.db, demo.host, MasterKeyring.from_settings(adconnect_env))
    tenant, _ = demo.tenant("Crash Corp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADCONNECT_")}
    env.update(
        {
            "ADCONNECT_DATABASE_URL": adconnect_env.database_url.get_secret_value(),
            "ADCONNECT_MASTER_KEY": adconnect_env.master_key.get_secret_value(),
            "ADCONNECT_DATA_DIR": str(adconnect_env.data_dir),
            "ADCONNECT_DEMO_ADS_API_URL": demo.emulator.url,
            "ADCONNECT_DEMO_ADS_CLIENT_ID": demo.settings.client_id,
            "ADCONNECT_DEMO_ADS_CLIENT_SECRET": demo.settings.client_secret.get_secret_value(),
            "ADCONNECT_DEMO_ADS_REDIRECT_URI": REDIRECT,
            "ADCONNECT_DEMO_ADS_PAGE_SIZE": "40",
        }
    )
    return demo, tenant, env


def _sync(env: dict[str, str], crashpoint: str | None = None, *, kill_after: float | None = None) -> int:
    command = [
        sys.executable,
        "-m",
        "adconnect",
        "sync",
        "--tenant",
        "crash-corp",
        "--provider",
        "demo_ads",
        "--since",
        SINCE.isoformat(),
        "--until",
        UNTIL.isoformat(),
        "--json",
    ]
    run_env = dict(env, **({"ADCONNECT_CRASHPOINT": crashpoint} if crashpoint else {}))
    process = subprocess.Popen(
        command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if kill_after is not None:
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode in (0, -signal.SIGKILL), f"{crashpoint}: {process.returncode}\n{out}\n{err}"
    return process.returncode


def _check_consistent(demo: Demo, tenant) -> None:
    """State never ahead of data: every day before the saved window end is fully loaded and correct."""
    with demo.db.tenant(tenant.id) as conn:
        state = conn.execute(select(stream_states.c.state)).scalar_one_or_none()
        dupes = conn.execute(
            text(f"SELECT count(*) - count(DISTINCT (account_id, campaign_id, date)) FROM {RAW}")
        ).scalar_one()
    assert dupes == 0
    if state and state.get("window_end"):
        end = dt.datetime.fromisoformat(state["window_end"]).date()
        committed = {k: v for k, v in demo.raw(tenant.id).items() if dt.date.fromisoformat(k[2]) < end}
        assert committed == demo.truth("1001", SINCE, min(end, UNTIL)), f"state {end} ahead of data"


@pytest.mark.slow
def test_sigkill_at_every_crash_point_loses_and_duplicates_nothing(crash_demo):
    demo, tenant, env = crash_demo
    truth = demo.truth("1001", SINCE, UNTIL)
    assert len(truth) == 92 * demo.emulator.campaigns
    killed = 0
    for point in POINTS:
        with demo.db.admin() as conn:  # every kill starts from an empty table and state
            if conn.execute(text(f"SELECT to_regclass('{RAW}')")).scalar() is not None:
                conn.execute(text(f"TRUNCATE {RAW}"))
            conn.execute(text("TRUNCATE adconnect.stream_states"))
        code = _sync(env, point)
        killed += code == -signal.SIGKILL
        assert code == -signal.SIGKILL, f"crash point {point} was never reached"
        _check_consistent(demo, tenant)
        assert _sync(env) == 0, point
        assert demo.raw(tenant.id) == truth, f"after a kill at {point}"
    assert killed == len(POINTS) >= 20


@pytest.mark.slow
def test_kills_at_random_moments_then_restatement_converge(crash_demo):
    demo, tenant, env = crash_demo
    rng = random.Random(20261203)
    for _ in range(6):
        _sync(env, kill_after=rng.uniform(0.3, 2.0))
        _check_consistent(demo, tenant)
    demo.emulator.restate(dt.date(2026, 10, 30))  # changes inside the window while crashing
    _sync(env, "mid_copy:2")
    assert _sync(env) == 0
    assert demo.raw(tenant.id) == demo.truth("1001", SINCE, UNTIL)
