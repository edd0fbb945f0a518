"""The Demo Ads provider: every hook of the adconnect contract, delegating to the client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import cached_property

from adconnect import (
    CONTRACT_VERSION,
    AuthorizationRequest,
    AuthorizationURL,
    CodeExchange,
    CredentialReport,
    CredentialStatus,
    DiscoveredAsset,
    MetricAvailability,
    MetricDefinition,
    Provider,
    ReadRequest,
    RecordBatch,
    ScheduleSpec,
    ScopeRequirement,
    StateCheckpoint,
    StreamSpec,
    TokenSet,
    hookimpl,
)
from adconnect.errors import ConfigurationError
from adconnect.oauth import OAuthClient, OAuthClientConfig
from adconnect.testing.emulator import Emulator
from adconnect_demo_ads import __version__
from adconnect_demo_ads.client import DemoAdsClient
from adconnect_demo_ads.metrics import METRICS
from adconnect_demo_ads.settings import DemoAdsSettings
from adconnect_demo_ads.streams import STREAMS

# TODO: the scopes the provider's API needs, as a scope expression.
REQUIRED_SCOPES = ScopeRequirement.parse("read_ads AND (read_reports OR manage_reports)")


class DemoAdsProvider(Provider):
    """Demo Ads: OAuth 2.0 with PKCE, ad-account discovery, daily campaign performance."""

    provider_id = "demo_ads"
    display_name = "Demo Ads"
    contract_version = CONTRACT_VERSION
    version = __version__
    settings_model = DemoAdsSettings
    #: The API budget is the app's, shared by every tenant: one quota scope.
    quota_scope = "demo_ads:app"
    default_schedules = (
        ScheduleSpec(name="hourly", cron="0 6-22 * * *", description="Top of every hour, 06:00-22:00"),
    )

    # --- helpers ---------------------------------------------------------------------------

    @cached_property
    def _oauth(self) -> OAuthClient:
        s: DemoAdsSettings = self.settings
        return OAuthClient(
            OAuthClientConfig(
                authorize_url=f"{s.oauth_url}/authorize",
                token_url=f"{s.oauth_url}/token",
                revoke_url=f"{s.oauth_url}/revoke",
                client_id=s.client_id,
                client_secret=s.client_secret,
                scopes=tuple(sorted(REQUIRED_SCOPES.scopes() - {"manage_reports"})),
            )
        )

    @cached_property
    def _api(self) -> DemoAdsClient:
        s: DemoAdsSettings = self.settings
        return DemoAdsClient(s.api_url, timeout=s.timeout_seconds, quota_scope=self.quota_scope)

    # --- registration ----------------------------------------------------------------------

    @hookimpl
    def adconnect_declare_streams(self) -> list[StreamSpec]:
        return STREAMS

    @hookimpl
    def adconnect_declare_metrics(self) -> list[MetricDefinition]:
        return METRICS

    # --- OAuth -----------------------------------------------------------------------------

    @hookimpl
    def adconnect_build_authorization_url(self, request: AuthorizationRequest) -> AuthorizationURL:
        return self._oauth.authorization_url(request)

    @hookimpl
    def adconnect_exchange_code(self, exchange: CodeExchange) -> TokenSet:
        return self._oauth.exchange_code(exchange)

    @hookimpl
    def adconnect_refresh_token(self, token: TokenSet) -> TokenSet:
        return self._oauth.refresh(token)

    @hookimpl
    def adconnect_revoke_token(self, token: TokenSet) -> bool:
        return self._oauth.revoke(token)

    # --- scope validation ------------------------------------------------------------------

    @hookimpl
    def adconnect_required_scopes(self, flow: str) -> ScopeRequirement:
        return REQUIRED_SCOPES

    @hookimpl
    def adconnect_validate_credential(self, token: TokenSet) -> CredentialReport:
        me = self._api.get("/v1/me", token.access_token.get_secret_value())
        granted = frozenset(str(s) for s in me.get("scopes", []))
        return CredentialReport(
            status=CredentialStatus.VALID,
            identity=str(me.get("id")),
            identity_name=me.get("name"),
            granted_scopes=granted,
            expires_at=token.expires_at,
        )

    # --- discovery -------------------------------------------------------------------------

    @hookimpl
    def adconnect_discover_assets(self, token: TokenSet) -> list[DiscoveredAsset]:
        body = self._api.get("/v1/accounts", token.access_token.get_secret_value())
        return [
            DiscoveredAsset(
                asset_id=str(a["id"]),
                kind="ad_account",
                name=str(a["name"]),
                currency=a.get("currency"),
                timezone=a.get("timezone"),
            )
            for a in body.get("data", [])
        ]

    @hookimpl
    def adconnect_discover_metric_availability(
        self, token: TokenSet, asset: DiscoveredAsset
    ) -> list[MetricAvailability]:
        body = self._api.get(f"/v1/accounts/{asset.asset_id}/metrics", token.access_token.get_secret_value())
        offered = {str(m) for m in body.get("data", [])}
        return [
            MetricAvailability(
                metric_id=m.metric_id,
                asset_id=asset.asset_id,
                available=m.metric_id.split(".", 1)[1] in offered,
                reason=None if m.metric_id.split(".", 1)[1] in offered else "not offered",
            )
            for m in METRICS
        ]

    # --- demos -----------------------------------------------------------------------------

    @hookimpl
    def adconnect_create_emulator(self, seed: int, port: int) -> Emulator:
        from adconnect_demo_ads.emulator import DemoAdsEmulator  # imported only when asked for

        return DemoAdsEmulator(seed=seed, port=port)

    # --- sync ------------------------------------------------------------------------------

    @hookimpl
    def adconnect_read_stream(self, request: ReadRequest) -> Iterator[RecordBatch | StateCheckpoint]:
        if request.stream != "campaign_daily":
            raise ConfigurationError(f"demo_ads has no stream {request.stream!r}")
        if request.token is None or request.connection.external_account_id is None:
            raise ConfigurationError("demo_ads needs a token and a selected ad account")
        return self._read_campaign_daily(request)

    def _read_campaign_daily(self, request: ReadRequest) -> Iterator[RecordBatch | StateCheckpoint]:
        assert request.token is not None
        token = request.token.access_token.get_secret_value()
        account = request.connection.external_account_id
        settings: DemoAdsSettings = self.settings
        start, end = _day(request.window.start), _day(request.window.end)  # [start, end)
        for chunk in request.window.chunks(STREAMS[0].chunk or timedelta(days=30)):
            since, until = _day(chunk.start), _day(chunk.end) - timedelta(days=1)
            if since > until:
                continue
            params = {"since": since.isoformat(), "until": until.isoformat(), "limit": settings.page_size}
            for page in self._api.pages(f"/v1/accounts/{account}/reports/campaign_daily", token, params):
                yield RecordBatch(
                    stream="campaign_daily", records=tuple({**row, "account_id": account} for row in page)
                )
            yield StateCheckpoint(stream="campaign_daily", state={"cursor": until.isoformat()})
        if start >= end:
            yield StateCheckpoint(stream="campaign_daily", state=dict(request.state or {}))


def _day(moment: datetime) -> date:
    return moment.date()
