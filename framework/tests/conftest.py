"""Test plugins for the framework's own tests: a small in-memory provider and cross-cutting
plugins. They are real plugins (registered through the real plugin manager), not mocks."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from pydantic import BaseModel

import adconnect
from adconnect import (
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
    ScopeRequirement,
    StateCheckpoint,
    StreamSpec,
    TokenSet,
    hookimpl,
)
from adconnect.plugins import PluginHost, load_plugins


class ToyItem(BaseModel):
    item_id: str
    day: datetime
    clicks: int


class ToyProvider(Provider):
    """A provider whose 'API' is a list in memory: ten items a day."""

    provider_id = "toy_ads"
    display_name = "Toy Ads"
    contract_version = adconnect.CONTRACT_VERSION
    version = "1.2.3"

    def __init__(self, granted: frozenset[str] = frozenset({"read", "insights"})) -> None:
        super().__init__()
        self.granted = granted
        self.revoked: list[str] = []

    @hookimpl
    def adconnect_declare_streams(self) -> list[StreamSpec]:
        return [
            StreamSpec(
                name="items",
                record_model=ToyItem,
                primary_key=("item_id", "day"),
                cursor_field="day",
                default_lookback=timedelta(days=2),
            )
        ]

    @hookimpl
    def adconnect_declare_metrics(self) -> list[MetricDefinition]:
        return [MetricDefinition(metric_id="toy_ads.clicks", level="item", title="Clicks")]

    @hookimpl
    def adconnect_build_authorization_url(self, request: AuthorizationRequest) -> AuthorizationURL:
        query = urlencode(
            {
                "state": request.state,
                "redirect_uri": request.redirect_uri,
                "code_challenge": request.code_challenge,
                "scope": "read insights",
            }
        )
        return AuthorizationURL(url=f"https://toy.example/authorize?{query}", scopes=("read", "insights"))

    @hookimpl
    def adconnect_exchange_code(self, exchange: CodeExchange) -> TokenSet:
        return TokenSet(
            access_token=f"at-{exchange.code.get_secret_value()}",
            refresh_token="rt-1",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            scopes=self.granted,
        )

    @hookimpl
    def adconnect_refresh_token(self, token: TokenSet) -> TokenSet:
        return token.model_copy(
            update={"access_token": "at-refreshed", "expires_at": datetime.now(UTC) + timedelta(hours=2)}
        )

    @hookimpl
    def adconnect_revoke_token(self, token: TokenSet) -> bool:
        self.revoked.append(token.access_token.get_secret_value())
        return True

    @hookimpl
    def adconnect_required_scopes(self, flow: str) -> ScopeRequirement:
        return ScopeRequirement.parse("read AND (insights OR reports)")

    @hookimpl
    def adconnect_validate_credential(self, token: TokenSet, flow: str) -> CredentialReport:
        return CredentialReport(
            status=CredentialStatus.VALID,
            identity="toy-user",
            granted_scopes=token.scopes,
            expires_at=token.expires_at,
        )

    @hookimpl
    def adconnect_discover_assets(self, token: TokenSet) -> list[DiscoveredAsset]:
        return [DiscoveredAsset(asset_id="acct-1", kind="ad_account", name="Toy account", currency="USD")]

    @hookimpl
    def adconnect_discover_metric_availability(
        self, token: TokenSet, asset: DiscoveredAsset
    ) -> list[MetricAvailability]:
        return [MetricAvailability(metric_id="toy_ads.clicks", asset_id=asset.asset_id, available=True)]

    @hookimpl
    def adconnect_read_stream(self, request: ReadRequest) -> Iterator[RecordBatch | StateCheckpoint]:
        day = request.window.start
        while day < request.window.end:
            yield RecordBatch(
                stream="items",
                records=tuple({"item_id": f"i{n}", "day": day, "clicks": n} for n in range(10)),
            )
            yield StateCheckpoint(stream="items", state={"day": day.isoformat()})
            day += timedelta(days=1)


class AuditPlugin:
    """A cross-cutting plugin: wraps every provider's calls, knowing none of them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.events: list[str] = []

    @hookimpl(wrapper=True)
    def adconnect_describe_provider(self, provider_id: str):  # type: ignore[no-untyped-def]
        self.seen.append(("describe", provider_id))
        return (yield)

    @hookimpl(wrapper=True)
    def adconnect_exchange_code(self, provider_id: str):  # type: ignore[no-untyped-def]
        self.seen.append(("exchange", provider_id))
        return (yield)

    @hookimpl
    def adconnect_sync_finished(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append(event.status)


@pytest.fixture
def toy() -> ToyProvider:
    return ToyProvider()


@pytest.fixture
def audit() -> AuditPlugin:
    return AuditPlugin()


@pytest.fixture
def host(toy: ToyProvider, audit: AuditPlugin) -> PluginHost:
    return load_plugins(entry_points=False, extra=[toy, audit])


# --- fake installed distributions (a module + .dist-info with entry_points.txt) ------------

PROVIDER = """
import adconnect
from adconnect import Provider, StreamSpec, hookimpl
from pydantic import BaseModel


class Row(BaseModel):
    id: str


class {cls}(Provider):
    provider_id = "{pid}"
    display_name = "{cls}"
    contract_version = "{contract}"
    auth_kind = adconnect.AuthKind.API_KEY

    @hookimpl
    def adconnect_declare_streams(self):
        return [StreamSpec(name="rows", record_model=Row, primary_key=("id",))]

    @hookimpl
    def adconnect_read_stream(self, request):
        return iter(())
{extra}
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install fake distributions into a fresh sys.path entry."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    added: list[str] = []

    def install(dist: str, entry_name: str, module: str, source: str, *, target: str | None = None) -> None:
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-1.4.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.4.0\n")
        (info / "entry_points.txt").write_text(f"[adconnect]\n{entry_name} = {target or module}\n")
        added.append(module)
        importlib.invalidate_caches()

    yield install
    for module in added:
        sys.modules.pop(module, None)


def provider_source(pid: str, *, contract: str = "1.0", extra: str = "") -> str:
    """Source of a minimal API-key provider module whose class is provider_class_name(pid)."""
    return PROVIDER.format(pid=pid, cls=provider_class_name(pid), contract=contract, extra=extra)


def provider_class_name(pid: str) -> str:
    return "".join(p.capitalize() for p in pid.split("_")) + "Provider"
