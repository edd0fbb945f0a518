"""One test per hook (``test_hook_<name>``), each through the real plugin manager.

tests/test_contract_meta.py fails when a hookspec has no test here (or anywhere)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

import adconnect
from adconnect import (
    AuthorizationRequest,
    Capability,
    CodeExchange,
    ConnectionContext,
    ConnectionRef,
    ConnectionState,
    CredentialStatus,
    MetricDefinition,
    PluginContractError,
    Provider,
    ReadRequest,
    RecordBatch,
    ScopeRequirement,
    StateCheckpoint,
    SyncFinished,
    SyncStarted,
    SyncWindow,
    TokenSet,
    hookimpl,
)
from adconnect.plugins import load_plugins

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
TOKEN = TokenSet(access_token="at-1", refresh_token="rt-1", scopes=frozenset({"read"}))


def _ref() -> ConnectionRef:
    return ConnectionRef(
        connection_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        provider_id="toy_ads",
        external_account_id="acct-1",
    )


def test_hook_adconnect_describe_provider(host, audit):
    info = host.info("toy_ads")
    assert (info.provider_id, info.display_name, info.version) == ("toy_ads", "Toy Ads", "1.2.3")
    assert info.contract_version == adconnect.CONTRACT_VERSION
    assert {Capability.OAUTH, Capability.SYNC, Capability.REFRESH, Capability.DISCOVERY} <= info.capabilities
    assert ("describe", "toy_ads") in audit.seen  # the cross-cutting wrapper saw the call


def test_hook_adconnect_declare_streams(host):
    (spec,) = host.streams("toy_ads")
    assert (spec.name, spec.primary_key, spec.cursor_field) == ("items", ("item_id", "day"), "day")
    assert host.stream("toy_ads", "items") is not None
    with pytest.raises(adconnect.errors.NotFoundError):
        host.stream("toy_ads", "nope")


def test_hook_adconnect_declare_metrics(toy):
    class DerivedMetrics:
        @hookimpl
        def adconnect_declare_metrics(self, provider_id):
            return [MetricDefinition(metric_id=f"{provider_id}.clicks_per_day", level="item")]

    host = load_plugins(entry_points=False, extra=[toy, DerivedMetrics()])
    assert [m.metric_id for m in host.metrics("toy_ads")] == ["toy_ads.clicks_per_day", "toy_ads.clicks"]

    class Clash:
        @hookimpl
        def adconnect_declare_metrics(self):
            return [MetricDefinition(metric_id="toy_ads.clicks", level="item")]

    clash = load_plugins(entry_points=False, extra=[Clash(), toy])
    assert clash.provider_ids() == []  # refused while loading, not at first use
    (problem,) = clash.problems
    assert (problem.name, problem.kind) == ("toy_ads", "contract_violation")
    assert "declared twice" in problem.message


def test_hook_adconnect_build_authorization_url(host):
    request = AuthorizationRequest(state="s1", redirect_uri="https://app.example/cb", code_challenge="c" * 43)
    url = host.build_authorization_url("toy_ads", request)
    assert "state=s1" in url.url and url.scopes == ("read", "insights")


def test_hook_adconnect_exchange_code(host, audit):
    token = host.exchange_code(
        "toy_ads",
        CodeExchange(code=SecretStr("abc"), redirect_uri="https://x/cb", code_verifier=SecretStr("v" * 43)),
    )
    assert token.access_token.get_secret_value() == "at-abc"
    assert "at-abc" not in repr(token)
    assert ("exchange", "toy_ads") in audit.seen


def test_hook_adconnect_refresh_token(host):
    refreshed = host.refresh_token("toy_ads", TOKEN)
    assert refreshed is not None and refreshed.access_token.get_secret_value() == "at-refreshed"

    class NoRefresh(Provider):
        provider_id = "plain"
        display_name = "Plain"
        contract_version = "1.0"
        auth_kind = adconnect.AuthKind.API_KEY

        @hookimpl
        def adconnect_declare_streams(self):
            return []

        @hookimpl
        def adconnect_read_stream(self, request):
            return iter(())

    plain = load_plugins(entry_points=False, extra=[NoRefresh()])
    assert plain.refresh_token("plain", TOKEN) is None  # the base class default


def test_hook_adconnect_revoke_token(host, toy):
    assert host.revoke_token("toy_ads", TOKEN) is True
    assert toy.revoked == ["at-1"]


def test_hook_adconnect_required_scopes(toy):
    host = load_plugins(entry_points=False, extra=[toy])
    assert str(host.required_scopes("toy_ads")) == "read AND (insights OR reports)"

    class OrgPolicy:
        """An organisation's scope policy: every provider must also grant 'audit'."""

        @hookimpl(wrapper=True)
        def adconnect_required_scopes(self):
            requirement = yield
            return requirement.and_(ScopeRequirement.parse("audit"))

    strict = load_plugins(entry_points=False, extra=[toy, OrgPolicy()])
    check = strict.required_scopes("toy_ads").check({"read", "insights"})
    assert check.missing == ("audit",)


def test_hook_adconnect_validate_credential(host):
    report = host.validate_credential("toy_ads", TOKEN)
    assert report.status is CredentialStatus.VALID
    assert report.missing_scopes == ("insights OR reports",)  # filled in by the framework
    full = host.validate_credential(
        "toy_ads", TOKEN.model_copy(update={"scopes": frozenset({"read", "reports"})})
    )
    assert full.missing_scopes == () and full.usable


def test_hook_adconnect_discover_assets(host):
    (asset,) = host.discover_assets("toy_ads", TOKEN)
    assert (asset.asset_id, asset.kind, asset.currency) == ("acct-1", "ad_account", "USD")


def test_hook_adconnect_discover_metric_availability(host):
    (asset,) = host.discover_assets("toy_ads", TOKEN)
    (availability,) = host.discover_metric_availability("toy_ads", TOKEN, asset)
    assert availability.available and availability.metric_id == "toy_ads.clicks"


def test_hook_adconnect_read_stream(host, toy):
    window = SyncWindow(start=NOW, end=NOW + timedelta(days=2))
    messages = list(
        host.read_stream("toy_ads", ReadRequest(connection=_ref(), stream="items", window=window))
    )
    assert [type(m) for m in messages] == [RecordBatch, StateCheckpoint] * 2
    assert sum(len(m.records) for m in messages if isinstance(m, RecordBatch)) == 20

    class Broken(type(toy)):
        @hookimpl
        def adconnect_read_stream(self, request):
            yield {"stream": "items", "records": "not a list"}

    broken = load_plugins(entry_points=False, extra=[Broken()])
    with pytest.raises(PluginContractError, match="adconnect_read_stream"):
        list(broken.read_stream("toy_ads", ReadRequest(connection=_ref(), stream="items", window=window)))


def test_hook_adconnect_check_connection(host):
    ref = _ref()
    missing = host.check_connection("toy_ads", ConnectionContext(connection=ref, enabled=True))
    assert (missing.status, missing.reason_code, missing.actions) == (
        ConnectionState.NOT_CONNECTED,
        "missing_credential",
        ("connect_oauth",),
    )
    fresh = host.check_connection(
        "toy_ads",
        ConnectionContext(
            connection=ref,
            enabled=True,
            token=TOKEN,
            credential_status=CredentialStatus.VALID,
            last_synced_at=datetime.now(UTC) - timedelta(minutes=5),
            last_run_status="succeeded",
        ),
    )
    assert (fresh.status, fresh.reason_code) == (ConnectionState.ACTIVE, "active_sync")
    disabled = host.check_connection(
        "toy_ads",
        ConnectionContext(
            connection=ref, enabled=False, token=TOKEN, credential_status=CredentialStatus.VALID
        ),
    )
    assert disabled.reason_code == "provider_disabled"
    reauth = host.check_connection(
        "toy_ads",
        ConnectionContext(
            connection=ref, enabled=True, token=TOKEN, credential_status=CredentialStatus.REAUTH_REQUIRED
        ),
    )
    assert reauth.reason_code == "credential_reauth_required"


def _window() -> SyncWindow:
    return SyncWindow(start=NOW, end=NOW + timedelta(days=1))


def test_hook_adconnect_sync_started(host, caplog):
    caplog.set_level(logging.INFO, logger="adconnect.events")
    host.notify_sync_started(
        SyncStarted(run_id=uuid.uuid4(), connection=_ref(), stream="items", window=_window())
    )
    assert "sync started" in caplog.text and "toy_ads" in caplog.text  # the default event_log plugin


def test_hook_adconnect_sync_finished(host, audit, caplog):
    class Failing:
        @hookimpl
        def adconnect_sync_finished(self, event):
            raise RuntimeError("listener broke")

    host.pm.register(Failing())
    event = SyncFinished(
        run_id=uuid.uuid4(),
        connection=_ref(),
        stream="items",
        window=_window(),
        status="succeeded",
        records_read=20,
    )
    host.notify_sync_finished(event)  # the failing listener is logged, not raised
    assert audit.events == ["succeeded"]
    assert "listener broke" in caplog.text


def test_hook_adconnect_create_emulator(host, toy):
    from adconnect.testing.emulator import Emulator, Response, route

    assert host.create_emulator("toy_ads") is None  # the base-class default: no emulator

    class ToyEmulator(Emulator):
        @route("GET", "/v1/ping")
        def ping(self, request):
            return Response(json={"pong": True})

    class WithEmulator(type(toy)):
        @hookimpl
        def adconnect_create_emulator(self, seed, port):
            return ToyEmulator(seed=seed, port=port)

    emulating = load_plugins(entry_points=False, extra=[WithEmulator()])
    emulator = emulating.create_emulator("toy_ads", seed=3)
    assert isinstance(emulator, ToyEmulator) and emulator.seed == 3
    with emulator:
        import httpx

        assert httpx.get(f"{emulator.url}/v1/ping").json() == {"pong": True}

    class Wrong(type(toy)):
        @hookimpl
        def adconnect_create_emulator(self):
            return "not an emulator"

    with pytest.raises(PluginContractError, match="not an Emulator"):
        load_plugins(entry_points=False, extra=[Wrong()]).create_emulator("toy_ads")
