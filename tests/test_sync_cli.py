"""The operator's path through the CLI: connect with OAuth, pick an account, sync, read the runs."""

from __future__ import annotations

import json

import pytest

from adconnect.testing.flows import consent
from adconnect_demo_ads.emulator import DemoAdsEmulator

REDIRECT = "http://127.0.0.1:8765/oauth/callback"
ROUTE = "GET /v1/accounts/{account_id}/reports/campaign_daily"


@pytest.fixture
def cli(adconnect_cli, monkeypatch):
    with DemoAdsEmulator(seed=5, redirect_uris=(REDIRECT,)) as emulator:
        monkeypatch.setenv("ADCONNECT_DEMO_ADS_API_URL", emulator.url)
        monkeypatch.setenv("ADCONNECT_DEMO_ADS_CLIENT_ID", emulator.oauth.client_id)
        monkeypatch.setenv("ADCONNECT_DEMO_ADS_CLIENT_SECRET", emulator.oauth.client_secret)
        monkeypatch.setenv("ADCONNECT_DEMO_ADS_REDIRECT_URI", REDIRECT)
        adconnect_cli.emulator = emulator
        yield adconnect_cli


def _start_connect(cli) -> dict[str, str]:
    """Acme Corp with demo_ads enabled and a connect flow started; returns the start's JSON."""
    cli("tenants", "create", "Acme Corp")
    cli("providers", "enable", "demo_ads", "--tenant", "acme-corp")
    return json.loads(
        cli(
            "connect",
            "start",
            "--tenant",
            "acme-corp",
            "--provider",
            "demo_ads",
            "--redirect-uri",
            REDIRECT,
            "--json",
        ).stdout
    )


def test_connect_select_sync_and_read_the_runs(cli):
    started = _start_connect(cli)
    assert "code_challenge_method=S256" in started["authorize_url"]
    code = consent(started["authorize_url"])
    callback = f"{REDIRECT}?code={code}&state={started['state']}"
    done = cli(
        "connect",
        "complete",
        "--provider",
        "demo_ads",
        "--redirect-uri",
        REDIRECT,
        "--callback-url",
        callback,
    )
    assert "connection default (demo_ads): active" in done.stdout
    assert code not in done.stdout + done.stderr
    replay = cli(
        "connect",
        "complete",
        "--provider",
        "demo_ads",
        "--redirect-uri",
        REDIRECT,
        "--callback-url",
        callback,
        code=1,
    )
    assert "error:" in replay.stderr and "Traceback" not in replay.stderr
    assert (
        "Demo Account Two"
        in cli("connections", "discover", "--tenant", "acme-corp", "--provider", "demo_ads").stdout
    )
    cli(
        "connections",
        "select-account",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--account",
        "nope",
        code=1,
    )
    cli(
        "connections",
        "select-account",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--account",
        "1002",
    )

    summary = json.loads(
        cli(
            "sync",
            "--tenant",
            "acme-corp",
            "--provider",
            "demo_ads",
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-11",
            "--json",
        ).stdout
    )
    (stream,) = summary["streams"]
    assert (stream["stream"], stream["status"], stream["records_read"]) == ("campaign_daily", "succeeded", 30)
    assert stream["records_inserted"] == 30 and stream["api_calls"] >= 1
    table = cli(
        "sync",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-11",
    ).stdout
    assert "Sync summary" in table and "succeeded" in table

    runs = json.loads(cli("runs", "--tenant", "acme-corp", "--json").stdout)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[0]["records_read"] == 30 and runs[0]["window_start"].startswith("2026-11-01")

    cli.emulator.inject(ROUTE, status=404, json={"error": {"code": "unknown_account"}})
    failed = cli(
        "sync", "--tenant", "acme-corp", "--provider", "demo_ads", "--since", "2026-11-01", "--json", code=1
    )
    assert json.loads(failed.stdout)["streams"][0]["error_class"] == "FatalProviderError"
    failures = json.loads(cli("runs", "--failed", "--json").stdout)
    assert len(failures) == 1
    shown = json.loads(cli("runs", "show", failures[0]["id"][:8], "--json").stdout)
    assert shown["error_class"] == "FatalProviderError"
    assert [(e["status"], e["code"], e["retryable"]) for e in shown["api_errors"]] == [
        (404, "unknown_account", False)
    ]


def test_sync_refuses_what_cannot_run(cli):
    cli("tenants", "create", "Acme Corp")
    missing = cli("sync", "--tenant", "acme-corp", "--provider", "demo_ads", code=1)
    assert "has no demo_ads connection" in missing.stderr and "adconnect connect start" in missing.stderr
    unknown = cli("sync", "--tenant", "acme-corp", "--provider", "nope", code=1)
    assert "provider 'nope' is not installed" in unknown.stderr
    bad_date = cli("sync", "--tenant", "acme-corp", "--provider", "demo_ads", "--since", "yesterday", code=1)
    assert "--since 'yesterday' is not a date" in bad_date.stderr


def test_a_tenant_can_override_the_lookback_within_the_maximum(cli, adconnect_db):
    started = _start_connect(cli)
    cli(
        "connect",
        "complete",
        "--provider",
        "demo_ads",
        "--redirect-uri",
        REDIRECT,
        "--code",
        consent(started["authorize_url"]),
        "--state",
        started["state"],
    )
    cli(
        "connections",
        "select-account",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--account",
        "1001",
    )
    cli("sync", "--tenant", "acme-corp", "--provider", "demo_ads", "--json")
    too_long = cli(
        "connections",
        "set-lookback",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--days",
        "45",
        code=1,
    )
    assert "at most 30 days" in too_long.stderr
    assert (
        "10 day(s)"
        in cli(
            "connections", "set-lookback", "--tenant", "acme-corp", "--provider", "demo_ads", "--days", "10"
        ).stdout
    )
    (stream,) = json.loads(cli("sync", "--tenant", "acme-corp", "--provider", "demo_ads", "--json").stdout)[
        "streams"
    ]
    import datetime as dt

    start = dt.datetime.fromisoformat(stream["window_start"])
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert start == today - dt.timedelta(days=10)  # state ends at today's midnight; minus 10 days
