"""Sample Ads against the framework's contract suite, talking to its emulator on loopback."""

from __future__ import annotations

from adconnect.testing.contract import ProviderContract
from adconnect_sample_ads.emulator import SampleAdsEmulator
from adconnect_sample_ads.provider import SampleAdsProvider
from adconnect_sample_ads.settings import SampleAdsSettings


class TestSampleAdsContract(ProviderContract):
    provider_class = SampleAdsProvider
    entry_point = "sample_ads"
    data_routes = ("GET /v1/accounts/{account_id}/reports/campaign_daily",)

    def make_emulator(self) -> SampleAdsEmulator:
        return SampleAdsEmulator(seed=7, redirect_uris=(self.redirect_uri,))

    def make_settings(self, emulator: SampleAdsEmulator) -> SampleAdsSettings:
        return SampleAdsSettings(
            api_url=emulator.url,
            client_id=emulator.oauth.client_id,
            client_secret=emulator.oauth.client_secret,
            redirect_uri=self.redirect_uri,
            page_size=7,
        )
