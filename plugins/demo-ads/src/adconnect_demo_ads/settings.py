"""Demo Ads settings: the only module of this plugin that reads the environment."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from adconnect import OAuthProviderSettings


class DemoAdsSettings(OAuthProviderSettings):
    """``ADCONNECT_DEMO_ADS_*``: app credentials, the registered redirect URI, the API URL."""

    model_config = SettingsConfigDict(env_prefix="ADCONNECT_DEMO_ADS_", extra="ignore", frozen=True)

    # TODO: the provider's real API base URL; tests point it at the emulator.
    api_url: str = "https://api.demo-ads.example"
    page_size: int = 100
    timeout_seconds: float = 30.0

    @property
    def oauth_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/oauth"
