"""The sync engine end to end: demo_ads (built from the plugin template) talking to its emulator
over loopback, the real loader, real PostgreSQL. No part of the engine is mocked."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import select, text

from adconnect.db.schema import api_error_log, connections, metric_registry, stream_states, sync_runs
from adconnect.errors import ConfigurationError, ReauthRequiredError
from adconnect.tenants import set_provider_enabled

from .conftest import NOW, RAW

ROUTE = "GET /v1/accounts/{account_id}/reports/campaign_daily"
DAY = dt.timedelta(days=1)


def _window(result) -> tuple[dt.date, dt.date]:
    return result.window.start.date(), result.window.end.date()


def _state(demo, tenant):
    with demo.db.tenant(tenant.id) as conn:
        return conn.execute(select(stream_states.c.state)).scalar_one()


def test_first_sync_loads_exactly_the_ground_truth(demo):
    tenant, record = demo.tenant("Acme")
    result = demo.sync(tenant, record)
    assert result.status == "succeeded", result.error_message
    start, end = _window(result)
    assert (start, end) == (dt.date(2026, 10, 21), dt.date(2026, 11, 21))  # 30-day backfill through today
    assert demo.raw(tenant.id) == demo.truth("1001", start, end)
    assert result.counts.records_inserted == result.counts.records_read == len(demo.raw())
    assert (
        _state(demo, tenant)["window_end"] == "2026-11-20T00:00:00+00:00"
    )  # today is partial: re-read next time
    with demo.db.tenant(tenant.id) as conn:
        run = conn.execute(select(sync_runs)).one()
    assert (run.status, run.records_read, run.api_calls) == (
        "succeeded",
        result.counts.records_read,
        result.counts.api_calls,
    )
    assert run.api_calls >= 2 and run.finished_at is not None


def test_second_run_rereads_only_the_lookback_and_changes_nothing(demo):
    tenant, record = demo.tenant("Acme")
    demo.sync(tenant, record)
    before = demo.raw()
    demo.clock[0] = NOW + dt.timedelta(hours=2)
    again = demo.sync(tenant, record)
    assert again.status == "succeeded"
    assert _window(again) == (dt.date(2026, 11, 17), dt.date(2026, 11, 21))  # 3-day lookback + today
    assert again.counts.records_inserted == again.counts.records_updated == 0
    assert demo.raw() == before


def test_restatement_inside_the_lookback_is_reflected_and_older_rows_untouched(demo):
    tenant, record = demo.tenant("Acme")
    demo.sync(tenant, record)
    inside, outside = dt.date(2026, 11, 18), dt.date(2026, 11, 10)
    old = demo.raw()
    demo.emulator.restate(inside)
    demo.emulator.restate(outside)
    demo.clock[0] = NOW + dt.timedelta(hours=1)
    result = demo.sync(tenant, record)
    assert result.counts.records_updated == demo.emulator.campaigns
    new = demo.raw()
    for key, values in new.items():
        day = dt.date.fromisoformat(key[2])
        if day == inside:
            assert values != old[key] and values == demo.truth("1001", day, day + DAY)[key]
        else:
            assert values == old[key], key  # outside the lookback: not re-read, not touched
    assert demo.truth("1001", outside, outside + DAY) != {
        k: v for k, v in new.items() if k[2] == "2026-11-10"
    }


def test_a_rate_limit_block_pauses_every_tenant_until_the_hint_expires(demo):
    alpha, alpha_record = demo.tenant("Alpha", account="1001")
    beta, beta_record = demo.tenant("Beta", account="1002")
    demo.emulator.block(2.0)
    blocked_at = time.time()
    results = {}

    def run(name, tenant, record):
        results[name] = demo.sync(tenant, record)

    first = threading.Thread(target=run, args=("alpha", alpha, alpha_record))
    first.start()
    deadline = time.time() + 5
    while demo.emulator.calls[ROUTE] == 0 and time.time() < deadline:  # alpha has hit the block
        time.sleep(0.01)
    time.sleep(0.1)
    second = threading.Thread(target=run, args=("beta", beta, beta_record))
    second.start()
    first.join(30)
    second.join(30)
    assert results["alpha"].status == results["beta"].status == "succeeded"
    beta_calls = [
        r.received_at
        for r in demo.emulator.requests
        if r.route == ROUTE.split(" ", 1)[1] and r.path_params["account_id"] == "1002"
    ]
    assert beta_calls and min(beta_calls) >= blocked_at + 2.0 - 0.05  # beta never called during the block
    assert (
        results["alpha"].counts.rate_limit_wait_seconds + results["beta"].counts.rate_limit_wait_seconds > 1.5
    )
    for tenant, account in ((alpha, "1001"), (beta, "1002")):
        start, end = _window(results["alpha" if account == "1001" else "beta"])
        assert demo.raw(tenant.id) == demo.truth(account, start, end)  # nothing missing afterwards
    with demo.db.tenant(alpha.id) as conn:
        logged = conn.execute(select(api_error_log)).all()
    assert logged and all(e.retryable and e.status_code == 429 for e in logged)


def test_revoked_access_marks_the_connection_and_keeps_the_state(demo):
    tenant, record = demo.tenant("Acme")
    demo.sync(tenant, record)
    state = _state(demo, tenant)
    demo.emulator.oauth.revoke_all()
    demo.clock[0] = NOW + dt.timedelta(hours=1)
    result = demo.sync(tenant, record)
    assert (result.status, result.error_class) == ("failed", "ReauthRequiredError")
    assert _state(demo, tenant) == state
    with demo.db.tenant(tenant.id) as conn:
        status = conn.execute(select(connections.c.status, connections.c.credential_status)).one()
        errors = conn.execute(select(api_error_log.c.status_code, api_error_log.c.retryable)).all()
    assert tuple(status) == ("needs_reauth", "reauth_required")
    assert [tuple(e) for e in errors] == [(None, False)]
    with pytest.raises(ReauthRequiredError, match="re-authorised"):
        demo.sync(tenant, record)  # refused until someone reconnects


def test_bad_records_are_counted_and_skipped_with_context(demo):
    tenant, record = demo.tenant("Acme")
    good = demo.emulator.rows("1001", dt.date(2026, 11, 19), dt.date(2026, 11, 19))
    bad = dict(good[0], campaign_id="bad-1", impressions="lots")
    demo.emulator.inject(ROUTE, json={"data": [*good, bad], "paging": {"next_cursor": None}})
    result = demo.sync(
        tenant,
        record,
        since=dt.datetime(2026, 11, 19, tzinfo=dt.UTC),
        until=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
    )
    assert result.status == "partial"
    assert (result.counts.records_skipped, result.counts.records_inserted) == (1, len(good))
    with demo.db.tenant(tenant.id) as conn:
        details = conn.execute(select(sync_runs.c.details)).scalar_one()
    (sample,) = details["bad_records"]
    assert sample["key"]["campaign_id"] == "bad-1" and "impressions" in sample["errors"][0]


def test_an_invalid_metric_is_quarantined_and_the_rest_loads(demo):
    tenant, record = demo.tenant("Acme")
    demo.emulator.inject(ROUTE, status=400, json={"error": {"code": "invalid_metric", "metric": "clicks"}})
    result = demo.sync(tenant, record)
    assert result.status == "succeeded"
    start, end = _window(result)
    assert demo.raw() == demo.truth("1001", start, end)
    with demo.db.platform() as conn:
        status = conn.execute(
            select(metric_registry.c.status).where(metric_registry.c.metric_id == "demo_ads.clicks")
        ).scalar_one()
    assert status == "invalid"


def test_a_repeated_key_falls_back_to_staging_and_keeps_the_last_copy(demo):
    tenant, record = demo.tenant("Acme")
    rows = demo.emulator.rows("1001", dt.date(2026, 11, 19), dt.date(2026, 11, 19))
    repeated = [*rows, dict(rows[0], impressions=999_999)]
    page = {"data": repeated, "paging": {"next_cursor": None}}
    demo.emulator.inject(ROUTE, json=page, times=2)  # the first read and the re-read
    result = demo.sync(
        tenant,
        record,
        since=dt.datetime(2026, 11, 19, tzinfo=dt.UTC),
        until=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
    )
    assert result.status == "succeeded", result.error_message
    raw = demo.raw()
    assert len(raw) == len(rows)
    assert raw[("1001", rows[0]["campaign_id"], rows[0]["date"])][0] == 999_999


def test_retryable_errors_are_retried_logged_and_finish(demo):
    tenant, record = demo.tenant("Acme")
    demo.emulator.inject(ROUTE, status=503, json={"error": {"code": "unavailable"}}, times=2)
    result = demo.sync(tenant, record)
    assert result.status == "succeeded"
    with demo.db.tenant(tenant.id) as conn:
        errors = conn.execute(
            select(
                api_error_log.c.status_code,
                api_error_log.c.retryable,
                api_error_log.c.endpoint,
                api_error_log.c.account_id,
            )
        ).all()
    assert [tuple(e) for e in errors] == [(503, True, "/v1/accounts/1001/reports/campaign_daily", "1001")] * 2


def test_retries_give_up_and_the_run_fails(demo):
    tenant, record = demo.tenant("Acme")
    demo.emulator.inject(ROUTE, status=503, json={"error": {"code": "unavailable"}}, times=None)
    result = demo.sync(tenant, record)
    assert (result.status, result.error_class) == ("failed", "RetryableProviderError")
    assert demo.emulator.calls[ROUTE] == demo.engine.max_attempts


def test_a_fatal_error_fails_the_run_without_retrying(demo):
    tenant, record = demo.tenant("Acme")
    demo.emulator.inject(ROUTE, status=404, json={"error": {"code": "unknown_account"}}, times=None)
    result = demo.sync(tenant, record)
    assert (result.status, result.error_class) == ("failed", "FatalProviderError")
    assert demo.emulator.calls[ROUTE] == 1


def test_full_refresh_replaces_history_outside_the_window(demo):
    tenant, record = demo.tenant("Acme")
    demo.sync(tenant, record, since=dt.datetime(2026, 9, 1, tzinfo=dt.UTC))
    assert min(k[2] for k in demo.raw()) == "2026-09-01"
    result = demo.sync(tenant, record, full_refresh=True)
    start, end = _window(result)
    assert demo.raw() == demo.truth("1001", start, end)
    assert result.counts.records_deleted > 0


def test_a_disabled_provider_is_refused(demo):
    tenant, record = demo.tenant("Acme")
    set_provider_enabled(demo.db, tenant, "demo_ads", False)
    with pytest.raises(ConfigurationError, match="disabled"):
        demo.sync(tenant, record)


def test_the_staging_strategy_loads_the_same_rows(demo):
    tenant, record = demo.tenant("Acme")
    demo.db._loader_role = ""  # as on a database where the loader role cannot be created
    first = demo.sync(tenant, record)
    assert demo.raw() == demo.truth("1001", *_window(first))
    demo.emulator.restate(dt.date(2026, 11, 19))
    demo.clock[0] = NOW + dt.timedelta(hours=1)
    second = demo.sync(tenant, record)
    assert second.counts.records_updated == demo.emulator.campaigns
    assert demo.raw() == demo.truth("1001", *_window(first))


def test_raw_tables_have_forced_row_level_security(demo):
    alpha, alpha_record = demo.tenant("Alpha", account="1001")
    beta, beta_record = demo.tenant("Beta", account="1002")
    demo.sync(alpha, alpha_record)
    demo.sync(beta, beta_record)
    with demo.db.tenant(alpha.id) as conn:
        owners = set(conn.execute(text(f"SELECT DISTINCT tenant_id FROM {RAW}")).scalars())
    assert owners == {alpha.id}
    with demo.db.platform() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {RAW}")).scalar_one() == 0


def _provider_with(demo, record_model):
    """demo_ads declaring its stream with another record model (a plugin upgrade)."""
    from adconnect import hookimpl
    from adconnect.plugins import load_plugins
    from adconnect_demo_ads.provider import DemoAdsProvider
    from adconnect_demo_ads.streams import STREAMS

    spec = STREAMS[0].model_copy(update={"record_model": record_model})

    class Upgraded(DemoAdsProvider):
        @hookimpl
        def adconnect_declare_streams(self):
            return [spec]

    demo.host = load_plugins(entry_points=False, extra=[Upgraded(demo.settings)])
    demo.service.host = demo.engine.host = demo.host


def test_a_new_field_becomes_a_column_and_a_changed_type_fails_clearly(demo):
    from adconnect_demo_ads.streams import CampaignDaily

    tenant, record = demo.tenant("Acme")
    demo.sync(tenant, record)

    class WithCurrency(CampaignDaily):
        currency: str | None = None

    _provider_with(demo, WithCurrency)
    demo.clock[0] = NOW + dt.timedelta(hours=1)
    assert demo.sync(tenant, record).status == "succeeded"
    with demo.db.admin() as conn:
        columns = dict(
            conn.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'raw' AND table_name = 'demo_ads__campaign_daily'"
                )
            ).all()
        )
    assert columns["currency"] == "text" and columns["impressions"] == "bigint"

    class ImpressionsAsText(CampaignDaily):
        impressions: str  # type: ignore[assignment]

    _provider_with(demo, ImpressionsAsText)
    before = demo.raw()
    failed = demo.sync(tenant, record)
    assert (failed.status, failed.error_class) == ("failed", "SchemaChangeError")
    assert "impressions is bigint" in failed.error_message and "declares text" in failed.error_message
    assert demo.raw() == before  # nothing was cast or rewritten
