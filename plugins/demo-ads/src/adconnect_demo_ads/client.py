"""The Demo Ads HTTP client: the only place that maps API answers onto adconnect errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from adconnect import (
    FatalProviderError,
    InvalidMetricError,
    MissingScopesError,
    ReauthRequiredError,
    RetryableProviderError,
)
from adconnect.quota import httpx_event_hooks, retry_after_usage

PROVIDER_ID = "demo_ads"


class DemoAdsClient:
    """GET JSON from the Demo Ads API with a bearer token; follow ``next_cursor`` pages.

    Every request goes through adconnect's quota governor for ``quota_scope`` (the app's
    budget, shared by every tenant): it waits while the scope is blocked, counts the call for
    the run record, and a 429 with ``Retry-After`` blocks the scope for every tenant.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 30.0,
        quota_scope: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        hooks = httpx_event_hooks(quota_scope, retry_after_usage) if quota_scope else {}
        self.http = http or httpx.Client(timeout=timeout, event_hooks=hooks)

    def get(self, path: str, token: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.get(
                f"{self.api_url}{path}",
                params=dict(params or {}),
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            raise RetryableProviderError(
                f"Demo Ads did not answer ({type(exc).__name__})", endpoint=path, provider_id=PROVIDER_ID
            ) from None
        if response.status_code >= 400:
            raise _error(response, path)
        try:
            body = response.json()
        except ValueError:
            raise FatalProviderError(
                "Demo Ads answered with invalid JSON",
                status=response.status_code,
                endpoint=path,
                provider_id=PROVIDER_ID,
            ) from None
        if not isinstance(body, dict):
            raise FatalProviderError(
                "Demo Ads answered with an unexpected shape",
                status=response.status_code,
                endpoint=path,
                provider_id=PROVIDER_ID,
            )
        return body

    def pages(self, path: str, token: str, params: Mapping[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Yield the ``data`` of every page, following ``paging.next_cursor``."""
        cursor: str | None = None
        while True:
            body = self.get(path, token, {**params, **({"cursor": cursor} if cursor else {})})
            data = body.get("data")
            if not isinstance(data, list):
                raise FatalProviderError(
                    "Demo Ads page has no data list", endpoint=path, provider_id=PROVIDER_ID
                )
            yield data
            cursor = (body.get("paging") or {}).get("next_cursor")
            if not cursor:
                return


def _error(response: httpx.Response, path: str) -> Exception:
    try:
        detail = response.json().get("error") or {}
    except (ValueError, AttributeError):
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    code = str(detail.get("code") or "")
    status = response.status_code
    common: dict[str, Any] = {
        "status": status,
        "provider_code": code or None,
        "endpoint": path,
        "provider_id": PROVIDER_ID,
    }
    message = f"Demo Ads answered {status}" + (f" ({code})" if code else "")
    if status == 401:
        return ReauthRequiredError(message + ": the token is invalid or revoked", provider_id=PROVIDER_ID)
    if status == 403:
        missing = [str(s) for s in detail.get("missing_scopes", [])] or ["unknown scope"]
        return MissingScopesError(message + ": permission missing", missing=missing, provider_id=PROVIDER_ID)
    if status == 429 or status >= 500:
        retry_after = response.headers.get("Retry-After")
        return RetryableProviderError(
            message,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            **common,
        )
    if code == "invalid_metric":
        return InvalidMetricError(
            message, metric_id=f"{PROVIDER_ID}.{detail.get('metric', 'unknown')}", provider_id=PROVIDER_ID
        )
    return FatalProviderError(message, **common)
