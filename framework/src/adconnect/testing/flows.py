"""Test helpers that play the human parts of real flows against an emulator."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx

from adconnect.connections import ConnectionRecord, ConnectionService

__all__ = ["connect", "consent"]


def consent(authorize_url: str) -> str:
    """Be the user on an emulated consent screen: follow the URL, return the authorization code."""
    response = httpx.get(authorize_url, follow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), f"consent screen answered {response.status_code}"
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert "code" in query, f"no code in redirect: {query.get('error')}"
    return query["code"][0]


def connect(
    service: ConnectionService,
    tenant_id: UUID,
    provider_id: str,
    *,
    redirect_uri: str,
    account: str | None = None,
    name: str = "default",
    flow: str = "default",
) -> ConnectionRecord:
    """Run the whole connect flow through the framework and select ``account`` (or the first asset)."""
    start = service.start_authorization(tenant_id, provider_id, redirect_uri=redirect_uri, flow=flow)
    result = service.complete_authorization(
        provider_id=provider_id,
        state=start.state,
        code=consent(start.url),
        redirect_uri=redirect_uri,
        flow=flow,
        connection_name=name,
    )
    record = result.connection
    if account is None:
        token = service.token(tenant_id, record.id)
        assets = service.host.discover_assets(provider_id, token) if token is not None else []
        account = assets[0].asset_id if assets else None
    if account is not None:
        record = service.select_account(tenant_id, record.id, account)
    return record
