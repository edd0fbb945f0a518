"""Demo Ads against the framework's contract suite, talking to its emulator on loopback."""

from __future__ import annotations

from adconnect.testing.contract import ProviderContract
from adconnect_demo_ads.emulator import DemoAdsEmulator
from adconnect_demo_ads.provider import DemoAdsProvider
from adconnect_demo_ads.settings import DemoAdsSettings


class TestDemoAdsContract(ProviderContract):
    provider_class = DemoAdsProvider
    entry_point = "demo_ads"
    data_routes = ("GET /v1/accounts/{account_id}/reports/campaign_daily",)

    def make_emulator(self) -> DemoAdsEmulator:
        return DemoAdsEmulator(seed=7, redirect_uris=(self.redirect_uri,))

    def make_settings(self, emulator: DemoAdsEmulator) -> DemoAdsSettings:
        return DemoAdsSettings(
            api_url=emulator.url,
            client_id=emulator.oauth.client_id,
            client_secret=emulator.oauth.client_secret,
            redirect_uri=self.redirect_uri,
            page_size=7,
        )
