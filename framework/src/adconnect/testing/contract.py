"""The provider contract suite: every provider plugin subclasses :class:`ProviderContract`.

A plugin's ``tests/test_contract.py`` is a few lines::

    class TestAcmeAdsContract(ProviderContract):
        provider_class = AcmeAdsProvider
        entry_point = "acme_ads"

        def make_emulator(self):
            return AcmeAdsEmulator(seed=1)

        def make_settings(self, emulator):
            return AcmeAdsSettings(base_url=emulator.url, ...)

and gets the same checks as every other provider, run against its emulator on loopback and a
real PostgreSQL (the ``adconnect_db`` fixture): registration, the OAuth round trip through
the framework (signed single-use state, PKCE, vault), scope validation, discovery, reading
every stream from empty state, incremental resume, idempotent lookback re-reads, error
classification, and that no secret ever reaches logs, reprs or error messages.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from sqlalchemy import insert

from adconnect.connections import ConnectionService
from adconnect.db.database import Database
from adconnect.db.schema import tenants
from adconnect.errors import AdconnectError, ProviderError, ReauthRequiredError, RetryableProviderError
from adconnect.keyring import MasterKeyring, generate_key
from adconnect.models import (
    Capability,
    ConnectionRef,
    ReadRequest,
    RecordBatch,
    StateCheckpoint,
    StreamSpec,
    SyncWindow,
    TokenSet,
)
from adconnect.plugins import PluginHost, contract_compatible, load_plugins
from adconnect.provider import Provider
from adconnect.testing.emulator import Emulator
from adconnect.testing.flows import consent

__all__ = ["ProviderContract"]


class ProviderContract:
    """Subclass me in a provider's tests. Set the class attributes, implement the factories."""

    provider_class: ClassVar[type[Provider]]
    #: The entry-point name the installed distribution registers (None: not checked).
    entry_point: ClassVar[str | None] = None
    #: The redirect URI the emulator and the provider settings register.
    redirect_uri: ClassVar[str] = "http://127.0.0.1:8765/oauth/callback"
    flow: ClassVar[str] = "default"
    #: Emulator routes ("METHOD /template") the data calls go through; used for fault checks.
    data_routes: ClassVar[tuple[str, ...]] = ()

    # --- factories a provider implements ---------------------------------------------------

    def make_emulator(self) -> Emulator:
        raise NotImplementedError("return the provider's emulator (not started)")

    def make_settings(self, emulator: Emulator) -> BaseSettings:
        raise NotImplementedError("return the provider's settings pointing at the emulator")

    def sync_window(self) -> SyncWindow:
        """A window with data in the emulator (default: the 6 days before 2026-11-30)."""
        end = datetime(2026, 11, 30, tzinfo=UTC)
        return SyncWindow(start=end - timedelta(days=6), end=end)

    def authorize(self, emulator: Emulator, url: str) -> str:
        """Play the user on the consent screen; return the authorization code."""
        return consent(url)

    def sensitive_values(self, emulator: Emulator, settings: BaseSettings) -> set[str]:
        """Values that must never leak: the settings' secrets and what the emulator issued."""
        values = {v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)}
        for component in (emulator, *emulator.components):
            reveal = getattr(component, "sensitive_values", None)
            if callable(reveal):
                values |= set(reveal())
        return {v for v in values if v and len(v) >= 6}

    # --- fixtures --------------------------------------------------------------------------

    @pytest.fixture
    def emulator(self) -> Iterator[Emulator]:
        with self.make_emulator() as emulator:
            yield emulator

    @pytest.fixture
    def settings(self, emulator: Emulator) -> BaseSettings:
        return self.make_settings(emulator)

    @pytest.fixture
    def provider(self, settings: BaseSettings) -> Provider:
        return self.provider_class(settings)

    @pytest.fixture
    def host(self, provider: Provider) -> PluginHost:
        host = load_plugins(entry_points=False, extra=[provider])
        assert host.problems == [], host.problems
        return host

    @pytest.fixture
    def pid(self) -> str:
        return self.provider_class.provider_id

    @pytest.fixture
    def tenant_id(self, adconnect_db: Database) -> UUID:
        with adconnect_db.platform() as conn:
            tenant: UUID = conn.execute(
                insert(tenants).values(name="Contract Tenant", slug="contract-tenant").returning(tenants.c.id)
            ).scalar_one()
        return tenant

    @pytest.fixture
    def service(self, adconnect_db: Database, host: PluginHost) -> ConnectionService:
        return ConnectionService.create(adconnect_db, host, MasterKeyring([generate_key()]))

    @pytest.fixture
    def connected(
        self, service: ConnectionService, emulator: Emulator, tenant_id: UUID, pid: str
    ) -> tuple[ConnectionRef, TokenSet]:
        """A connection authorised through the whole framework flow, its token from the vault."""
        info = service.host.info(pid)
        if Capability.OAUTH not in info.capabilities:
            pytest.skip("the provider does not use OAuth")
        start = service.start_authorization(tenant_id, pid, redirect_uri=self.redirect_uri, flow=self.flow)
        code = self.authorize(emulator, start.url)
        result = service.complete_authorization(
            provider_id=pid, state=start.state, code=code, redirect_uri=self.redirect_uri, flow=self.flow
        )
        token = service.token(tenant_id, result.connection.id)
        assert token is not None
        assets = service.host.discover_assets(pid, token)
        if assets:
            record = service.select_account(tenant_id, result.connection.id, assets[0].asset_id)
        else:
            record = result.connection
        return record.ref(), token

    # --- registration ----------------------------------------------------------------------

    def test_registration_is_valid(self, host: PluginHost, pid: str) -> None:
        info = host.info(pid)
        assert info.provider_id == pid == self.provider_class.provider_id
        assert contract_compatible(info.contract_version), info.contract_version
        assert self.provider_class.__doc__, "document the provider class"
        streams = host.streams(pid)
        assert streams, "a provider declares at least one stream"
        assert len({s.name for s in streams}) == len(streams), "stream names must be unique"
        for metric in host.metrics(pid):
            assert metric.metric_id.startswith(f"{pid}."), metric.metric_id

    def test_settings_read_the_providers_environment_prefix(self, pid: str) -> None:
        model = self.provider_class.settings_model
        if model is None:
            pytest.skip("no settings")
        prefix = model.model_config.get("env_prefix", "")
        assert prefix == f"ADCONNECT_{pid.upper()}_", f"settings must read ADCONNECT_{pid.upper()}_*"

    def test_installed_entry_point_loads_this_provider(self) -> None:
        if self.entry_point is None:
            pytest.skip("entry_point not set")
        found = [e for e in md.entry_points(group="adconnect") if e.name == self.entry_point]
        assert found, f"no entry point {self.entry_point!r} in group 'adconnect': pip install -e it"
        assert [e.load() for e in found] == [self.provider_class]

    # --- OAuth and scopes ------------------------------------------------------------------

    def test_oauth_round_trip(
        self, service: ConnectionService, connected: tuple[ConnectionRef, TokenSet], pid: str
    ) -> None:
        ref, token = connected
        record = service.get(ref.tenant_id, ref.connection_id)
        assert record.status == "active", record.status_reason
        assert token.access_token.get_secret_value()
        if Capability.REFRESH in service.host.info(pid).capabilities:
            refreshed = service.host.refresh_token(pid, token)
            assert refreshed is not None and refreshed.access_token.get_secret_value()

    def test_state_is_single_use(
        self,
        service: ConnectionService,
        emulator: Emulator,
        tenant_id: UUID,
        pid: str,
        connected: tuple[ConnectionRef, TokenSet],
    ) -> None:
        start = service.start_authorization(tenant_id, pid, redirect_uri=self.redirect_uri, flow=self.flow)
        code = self.authorize(emulator, start.url)
        service.complete_authorization(
            provider_id=pid, state=start.state, code=code, redirect_uri=self.redirect_uri, flow=self.flow
        )
        with pytest.raises(AdconnectError) as replay:
            service.complete_authorization(
                provider_id=pid, state=start.state, code=code, redirect_uri=self.redirect_uri, flow=self.flow
            )
        assert replay.value.code == "replayed_oauth_state"

    def test_scope_validation(
        self, host: PluginHost, pid: str, connected: tuple[ConnectionRef, TokenSet]
    ) -> None:
        _, token = connected
        report = host.validate_credential(pid, token, self.flow)
        assert report.usable, report.missing_scopes
        requirement = host.required_scopes(pid, self.flow)
        if requirement is not None:
            assert requirement.check(report.granted_scopes).satisfied
            assert (
                host.validate_credential(pid, token.model_copy(update={"scopes": frozenset()}), self.flow)
                is not None
            )

    def test_discovery(self, host: PluginHost, pid: str, connected: tuple[ConnectionRef, TokenSet]) -> None:
        _, token = connected
        if Capability.DISCOVERY not in host.info(pid).capabilities:
            pytest.skip("no discovery")
        assets = host.discover_assets(pid, token)
        assert assets, "discovery returned nothing from the emulator"
        assert len({a.asset_id for a in assets}) == len(assets)

    # --- sync ------------------------------------------------------------------------------

    def _read(
        self,
        host: PluginHost,
        pid: str,
        ref: ConnectionRef,
        token: TokenSet,
        spec: StreamSpec,
        window: SyncWindow,
        state: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        records: list[dict[str, Any]] = []
        last_state: dict[str, Any] | None = None
        pending = 0
        for message in host.read_stream(
            pid, ReadRequest(connection=ref, stream=spec.name, window=window, state=state, token=token)
        ):
            if isinstance(message, RecordBatch):
                assert message.stream == spec.name
                records.extend(spec.record_model.model_validate(r).model_dump() for r in message.records)
                pending += len(message.records)
            else:
                assert isinstance(message, StateCheckpoint) and message.stream == spec.name
                last_state, pending = message.state, 0
        assert pending == 0, "records after the last checkpoint would never be committed"
        return records, last_state

    @staticmethod
    def _keyed(spec: StreamSpec, records: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {tuple(r[k] for k in spec.primary_key): r for r in records}

    def test_read_every_stream_from_empty_state(
        self, host: PluginHost, pid: str, connected: tuple[ConnectionRef, TokenSet]
    ) -> None:
        ref, token = connected
        for spec in host.streams(pid):
            records, state = self._read(host, pid, ref, token, spec, self.sync_window())
            assert records, f"stream {spec.name} read nothing from the emulator"
            assert state is not None, f"stream {spec.name} never checkpointed"
            keyed = self._keyed(spec, records)
            assert keyed, spec.name

    def test_incremental_resume_equals_one_read(
        self, host: PluginHost, pid: str, connected: tuple[ConnectionRef, TokenSet]
    ) -> None:
        ref, token = connected
        window = self.sync_window()
        middle = window.start + (window.end - window.start) / 2
        for spec in host.streams(pid):
            whole = self._keyed(spec, self._read(host, pid, ref, token, spec, window)[0])
            first, state = self._read(host, pid, ref, token, spec, SyncWindow(start=window.start, end=middle))
            second, _ = self._read(
                host, pid, ref, token, spec, SyncWindow(start=middle, end=window.end), state
            )
            resumed = self._keyed(spec, first) | self._keyed(spec, second)
            assert resumed == whole, f"{spec.name}: resuming from state loses or changes records"

    def test_lookback_reread_is_idempotent(
        self, host: PluginHost, pid: str, connected: tuple[ConnectionRef, TokenSet]
    ) -> None:
        ref, token = connected
        for spec in host.streams(pid):
            once, state = self._read(host, pid, ref, token, spec, self.sync_window())
            again, _ = self._read(host, pid, ref, token, spec, self.sync_window(), state)
            assert self._keyed(spec, once) == self._keyed(spec, again), spec.name

    def test_engine_loads_every_stream_and_rereads_idempotently(
        self, service: ConnectionService, connected: tuple[ConnectionRef, TokenSet], pid: str
    ) -> None:
        """Through the real sync engine into PostgreSQL: a second read of the window changes nothing."""
        from adconnect.quota import QuotaGovernor
        from adconnect.sync.engine import StreamOptions, SyncEngine
        from adconnect.tenants import Tenant, set_provider_enabled

        ref, _ = connected
        set_provider_enabled(
            service.db,
            Tenant(ref.tenant_id, "contract-tenant", "Contract Tenant", datetime.now(UTC)),
            pid,
            True,
        )
        window = self.sync_window()
        engine = SyncEngine(service.db, service.host, QuotaGovernor(service.db), clock=lambda: window.end)
        options = StreamOptions(since=window.start, until=window.end)
        first = engine.sync_connection(service, ref.tenant_id, ref.connection_id, options=options)
        assert first and all(r.status == "succeeded" for r in first), [r.summary() for r in first]
        assert all(r.counts.records_read > 0 for r in first)
        again = engine.sync_connection(service, ref.tenant_id, ref.connection_id, options=options)
        for result in again:
            assert result.status == "succeeded", result.summary()
            assert result.counts.records_inserted == result.counts.records_updated == 0, result.summary()
            assert result.counts.records_deleted == 0, result.summary()

    # --- errors and secrets ----------------------------------------------------------------

    def test_provider_errors_are_classified(
        self, host: PluginHost, pid: str, emulator: Emulator, connected: tuple[ConnectionRef, TokenSet]
    ) -> None:
        if not self.data_routes:
            pytest.skip("data_routes not declared")
        ref, token = connected
        spec = host.streams(pid)[0]
        for status, expected in ((503, RetryableProviderError), (401, ReauthRequiredError)):
            for route in self.data_routes:
                emulator.inject(route, status=status, json={"error": "injected"}, times=None)
            with pytest.raises(expected):
                self._read(host, pid, ref, token, spec, self.sync_window())
            emulator.clear_faults()

    def test_secrets_never_leak(
        self,
        host: PluginHost,
        pid: str,
        emulator: Emulator,
        settings: BaseSettings,
        connected: tuple[ConnectionRef, TokenSet],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        ref, token = connected
        seen: list[str] = [repr(token), str(token), repr(settings), str(ref)]
        for spec in host.streams(pid):
            records, state = self._read(host, pid, ref, token, spec, self.sync_window())
            seen += [repr(records[:5]), repr(state)]
        for route in self.data_routes:
            emulator.inject(route, status=500, json={"error": {"message": "boom"}}, times=None)
        try:
            self._read(host, pid, ref, token, host.streams(pid)[0], self.sync_window())
        except ProviderError as exc:
            seen += [str(exc), repr(exc), repr(exc.to_dict())]
        finally:
            emulator.clear_faults()
        haystack = "\n".join(seen) + "\n" + caplog.text
        leaked = sorted(v for v in self.sensitive_values(emulator, settings) if v in haystack)
        assert not leaked, f"{len(leaked)} secret value(s) leaked into logs, reprs or errors"
