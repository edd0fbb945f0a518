"""Demo Ads specifics beyond the contract suite: paging and error mapping."""

from __future__ import annotations

import pytest

from adconnect import MissingScopesError, RetryableProviderError
from adconnect_demo_ads.client import DemoAdsClient
from adconnect_demo_ads.emulator import DemoAdsEmulator


@pytest.fixture
def emulator():
    with DemoAdsEmulator(seed=3) as emulator:
        yield emulator


def _token(emulator, scopes=("read_ads", "read_reports")) -> str:
    return emulator.oauth.mint(scopes)["access_token"]


def test_pages_follow_the_cursor_until_the_end(emulator):
    client = DemoAdsClient(emulator.url)
    pages = list(
        client.pages(
            "/v1/accounts/1001/reports/campaign_daily",
            _token(emulator),
            {"since": "2026-11-01", "until": "2026-11-10", "limit": 4},
        )
    )
    assert sum(len(p) for p in pages) == 30  # 10 days x 3 campaigns
    assert len(pages) == 8
    assert emulator.calls["GET /v1/accounts/{account_id}/reports/campaign_daily"] == 8


def test_rate_limits_carry_retry_after(emulator):
    emulator.inject("GET /v1/accounts", status=429, headers={"Retry-After": "12"})
    with pytest.raises(RetryableProviderError) as caught:
        DemoAdsClient(emulator.url).get("/v1/accounts", _token(emulator))
    assert caught.value.retry_after == 12 and caught.value.status == 429


def test_a_missing_scope_names_it(emulator):
    with pytest.raises(MissingScopesError) as caught:
        DemoAdsClient(emulator.url).get(
            "/v1/accounts/1001/reports/campaign_daily",
            _token(emulator, ("read_ads",)),
            {"since": "2026-11-01", "until": "2026-11-01"},
        )
    assert caught.value.missing == ["read_reports"]
