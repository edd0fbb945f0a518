"""A loopback emulator of the Sample Ads API, for tests, demos and plugin development.

Built on adconnect's emulator harness: an OAuth 2.0 server (PKCE, refresh, revoke) plus the
API routes the provider calls. Data is a pure function of (seed, account, campaign, day), so
re-reading a window returns exactly the same numbers.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

from adconnect.testing.emulator import Emulator, Request, Response, route
from adconnect.testing.oauth_server import OAuthServer

ACCOUNTS = (
    {"id": "1001", "name": "Sample Account One", "currency": "USD", "timezone": "America/Jamaica"},
    {"id": "1002", "name": "Sample Account Two", "currency": "JMD", "timezone": "America/Jamaica"},
)
CAMPAIGNS_PER_ACCOUNT = 3
OFFERED_METRICS = ("impressions", "clicks", "spend")
GRANTED_SCOPES = ("read_ads", "read_reports")


class SampleAdsEmulator(Emulator):
    """The Sample Ads API on 127.0.0.1: ``/oauth/*``, ``/v1/me``, ``/v1/accounts``, reports."""

    def __init__(
        self,
        seed: int = 0,
        *,
        client_id: str = "sample-client",
        client_secret: str = "sample-client-secret-0123456789",  # noqa: S107 - test value
        redirect_uris: tuple[str, ...] = ("http://127.0.0.1:8765/oauth/callback",),
        granted_scopes: tuple[str, ...] = GRANTED_SCOPES,
        port: int = 0,
    ) -> None:
        super().__init__(seed=seed, port=port)
        self.oauth = self.mount(
            OAuthServer(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=redirect_uris,
                granted_scopes=granted_scopes,
                require_pkce=True,
            )
        )

    # --- helpers ---------------------------------------------------------------------------

    def _caller(self, request: Request, scope: str | None = None) -> Response | tuple[str, ...]:
        info = self.oauth.check_access_token(request.bearer_token)
        if info is None:
            return Response(status=401, json={"error": {"code": "invalid_token", "message": "Invalid token"}})
        if scope is not None and scope not in info.scopes:
            return Response(
                status=403, json={"error": {"code": "insufficient_scope", "missing_scopes": [scope]}}
            )
        return tuple(sorted(info.scopes))

    def _number(self, *parts: object, low: int, high: int) -> int:
        digest = hashlib.sha256("|".join(map(str, (self.seed, *parts))).encode()).digest()
        return low + int.from_bytes(digest[:8], "big") % (high - low + 1)

    # --- routes ----------------------------------------------------------------------------

    @route("GET", "/v1/me")
    def me(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        return Response(json={"id": self.oauth.subject, "name": "Emulated User", "scopes": list(caller)})

    @route("GET", "/v1/accounts")
    def accounts(self, request: Request) -> Response:
        caller = self._caller(request, "read_ads")
        return caller if isinstance(caller, Response) else Response(json={"data": list(ACCOUNTS)})

    @route("GET", "/v1/accounts/{account_id}/metrics")
    def metrics(self, request: Request) -> Response:
        caller = self._caller(request, "read_ads")
        return caller if isinstance(caller, Response) else Response(json={"data": list(OFFERED_METRICS)})

    @route("GET", "/v1/accounts/{account_id}/reports/campaign_daily")
    def campaign_daily(self, request: Request) -> Response:
        caller = self._caller(request, "read_reports")
        if isinstance(caller, Response):
            return caller
        account = request.path_params["account_id"]
        if account not in {a["id"] for a in ACCOUNTS}:
            return Response(status=404, json={"error": {"code": "unknown_account"}})
        try:
            since = date.fromisoformat(request.query["since"])
            until = date.fromisoformat(request.query["until"])
            limit = max(1, min(int(request.query.get("limit", "100")), 500))
            offset = int(request.query.get("cursor", "0"))
        except (KeyError, ValueError):
            return Response(status=400, json={"error": {"code": "invalid_parameter"}})
        rows = []
        day = since
        while day <= until:
            for n in range(1, CAMPAIGNS_PER_ACCOUNT + 1):
                campaign = f"{account}-c{n}"
                impressions = self._number(account, campaign, day, "i", low=100, high=5000)
                rows.append(
                    {
                        "campaign_id": campaign,
                        "campaign_name": f"Campaign {n}",
                        "date": day.isoformat(),
                        "impressions": impressions,
                        "clicks": impressions // self._number(account, campaign, day, "r", low=20, high=80),
                        "spend_micros": self._number(account, campaign, day, "s", low=1, high=90) * 1_000_000,
                    }
                )
            day += timedelta(days=1)
        page = rows[offset : offset + limit]
        nxt = offset + limit if offset + limit < len(rows) else None
        return Response(json={"data": page, "paging": {"next_cursor": str(nxt) if nxt else None}})
