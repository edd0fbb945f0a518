"""A loopback emulator of the Demo Ads API, for tests, demos and plugin development.

Built on adconnect's emulator harness: an OAuth 2.0 server (PKCE, refresh, revoke) plus the
API routes the provider calls. Data is a pure function of (seed, account, campaign, day,
revision), so re-reading a window returns exactly the same numbers until :meth:`restate`
changes a day - the way ad platforms restate conversions inside their attribution window.

Demo Ads is the test provider of the sync engine, so its emulator also offers:

* :meth:`rows` - the ground truth for an account and a date range;
* :meth:`block` - an app-wide rate limit: every data call answers 429 with ``Retry-After``
  until the block ends (the quota governor must keep every tenant away meanwhile);
* ``campaigns`` - more campaigns per account for bigger loads.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import date, timedelta

from adconnect.testing.emulator import Emulator, Request, Response, route
from adconnect.testing.oauth_server import OAuthServer

ACCOUNTS = (
    {"id": "1001", "name": "Demo Account One", "currency": "USD", "timezone": "America/Jamaica"},
    {"id": "1002", "name": "Demo Account Two", "currency": "JMD", "timezone": "America/Jamaica"},
)
CAMPAIGNS_PER_ACCOUNT = 3
OFFERED_METRICS = ("impressions", "clicks", "spend")
GRANTED_SCOPES = ("read_ads", "read_reports")


class DemoAdsEmulator(Emulator):
    """The Demo Ads API on 127.0.0.1: ``/oauth/*``, ``/v1/me``, ``/v1/accounts``, reports."""

    def __init__(
        self,
        seed: int = 0,
        *,
        client_id: str = "sample-client",
        client_secret: str = "sample-client-secret-0123456789",  # noqa: S107 - test value
        redirect_uris: tuple[str, ...] = ("http://127.0.0.1:8765/oauth/callback",),
        granted_scopes: tuple[str, ...] = GRANTED_SCOPES,
        campaigns: int = CAMPAIGNS_PER_ACCOUNT,
        port: int = 0,
    ) -> None:
        super().__init__(seed=seed, port=port)
        self.campaigns = campaigns
        self.revisions: dict[date, int] = {}
        self.blocked_until = 0.0
        self.oauth = self.mount(
            OAuthServer(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=redirect_uris,
                granted_scopes=granted_scopes,
                require_pkce=True,
            )
        )

    # --- test controls ---------------------------------------------------------------------

    def restate(self, day: date) -> None:
        """Change every number of ``day`` (as a platform restating conversions would)."""
        with self.handler_lock:
            self.revisions[day] = self.revisions.get(day, 0) + 1

    def block(self, seconds: float) -> None:
        """Rate-limit the whole app: data calls answer 429 + Retry-After for ``seconds``."""
        with self.handler_lock:
            self.blocked_until = time.time() + seconds

    def rows(self, account: str, since: date, until: date) -> list[dict[str, object]]:
        """The ground truth: every campaign_daily row of ``account`` from ``since`` to ``until``."""
        rows = []
        day = since
        while day <= until:
            revision = self.revisions.get(day, 0)
            for n in range(1, self.campaigns + 1):
                campaign = f"{account}-c{n}"
                impressions = self._number(account, campaign, day, revision, "i", low=100, high=5000)
                rows.append(
                    {
                        "campaign_id": campaign,
                        "campaign_name": f"Campaign {n}",
                        "date": day.isoformat(),
                        "impressions": impressions,
                        "clicks": impressions // self._number(account, campaign, day, "r", low=20, high=80),
                        "spend_micros": self._number(account, campaign, day, revision, "s", low=1, high=90)
                        * 1_000_000,
                    }
                )
            day += timedelta(days=1)
        return rows

    def on_reset(self) -> None:
        self.revisions = {}
        self.blocked_until = 0.0

    # --- helpers ---------------------------------------------------------------------------

    def _blocked(self) -> Response | None:
        remaining = self.blocked_until - time.time()
        if remaining <= 0:
            return None
        return Response(
            status=429,
            headers={"Retry-After": str(math.ceil(remaining))},
            json={"error": {"code": "rate_limited", "message": "App request limit reached"}},
        )

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
        blocked = self._blocked()
        if blocked is not None:
            return blocked
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
        rows = self.rows(account, since, until)
        page = rows[offset : offset + limit]
        nxt = offset + limit if offset + limit < len(rows) else None
        return Response(json={"data": page, "paging": {"next_cursor": str(nxt) if nxt else None}})
