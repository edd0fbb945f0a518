"""The typed facade over the plugin hooks: :class:`PluginHost`, and the records it holds.

Every hook call goes through a method of :class:`PluginHost`, which validates the result
against the contract type: a plugin that returns a value the contract does not allow raises
:class:`~adconnect.errors.PluginContractError`. Provider hooks are called for one provider
through ``subset_hook_caller``, so cross-cutting plugins' wrappers see every provider's calls;
event hooks go to every listener, and a listener that raises is logged and skipped.
:mod:`adconnect.plugins.loading` builds the host.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy
from pydantic import TypeAdapter, ValidationError

from adconnect.errors import NotFoundError, PluginContractError
from adconnect.models import (
    AuthorizationRequest,
    AuthorizationURL,
    CodeExchange,
    ConnectionContext,
    ConnectionStatus,
    CredentialReport,
    DiscoveredAsset,
    MetricAvailability,
    MetricDefinition,
    ProviderInfo,
    ReadMessage,
    ReadRequest,
    StreamSpec,
    SyncFinished,
    SyncStarted,
    TokenSet,
)
from adconnect.scopes import ScopeRequirement

__all__ = ["PluginHost", "PluginProblem", "PluginRecord", "ProblemKind"]

log = logging.getLogger("adconnect.plugins")  # one logger for the package, as before the split

ProblemKind = Literal["import_error", "incompatible_contract", "contract_violation", "duplicate", "disabled"]


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that did not load, and what to do about it."""

    name: str
    kind: ProblemKind
    message: str
    hint: str
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PluginRecord:
    """A provider that loaded, with where it came from."""

    provider_id: str
    info: ProviderInfo
    distribution: str | None
    distribution_version: str | None


@dataclass
class PluginHost:
    """The loaded plugins and typed access to their hooks."""

    pm: pluggy.PluginManager
    records: dict[str, PluginRecord] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    _providers: dict[str, object] = field(default_factory=dict)

    # --- what is loaded --------------------------------------------------------------------

    def provider_ids(self) -> list[str]:
        return sorted(self._providers)

    def provider(self, provider_id: str) -> object:
        try:
            return self._providers[provider_id]
        except KeyError:
            known = ", ".join(self.provider_ids()) or "none"
            raise NotFoundError(
                f"provider {provider_id!r} is not installed (installed: {known})",
                hint="`adconnect providers list` shows the installed providers and any that failed to load",
            ) from None

    def info(self, provider_id: str) -> ProviderInfo:
        """Ask the provider to describe itself (wrappers see the call)."""
        return self._call(provider_id, "adconnect_describe_provider", ProviderInfo)

    # --- registration ----------------------------------------------------------------------

    def streams(self, provider_id: str) -> list[StreamSpec]:
        return self._call(provider_id, "adconnect_declare_streams", list[StreamSpec])

    def stream(self, provider_id: str, name: str) -> StreamSpec:
        for spec in self.streams(provider_id):
            if spec.name == name:
                return spec
        raise NotFoundError(f"provider {provider_id!r} has no stream {name!r}")

    def metrics(self, provider_id: str) -> list[MetricDefinition]:
        caller = self._subset(provider_id, "adconnect_declare_metrics")
        lists = caller(provider_id=provider_id)
        metrics = [
            m
            for batch in lists
            for m in _validated(batch, list[MetricDefinition], provider_id, "adconnect_declare_metrics")
        ]
        seen: set[str] = set()
        for metric in metrics:
            if metric.metric_id in seen:
                raise PluginContractError(
                    f"metric {metric.metric_id} is declared twice", provider_id=provider_id
                )
            if metric.provider_id != provider_id:
                raise PluginContractError(
                    f"metric {metric.metric_id} does not belong to provider {provider_id}",
                    provider_id=provider_id,
                )
            seen.add(metric.metric_id)
        return metrics

    # --- OAuth and scopes ------------------------------------------------------------------

    def build_authorization_url(self, provider_id: str, request: AuthorizationRequest) -> AuthorizationURL:
        return self._call(provider_id, "adconnect_build_authorization_url", AuthorizationURL, request=request)

    def exchange_code(self, provider_id: str, exchange: CodeExchange) -> TokenSet:
        return self._call(provider_id, "adconnect_exchange_code", TokenSet, exchange=exchange)

    def refresh_token(self, provider_id: str, token: TokenSet) -> TokenSet | None:
        return self._call(provider_id, "adconnect_refresh_token", TokenSet | None, token=token)

    def revoke_token(self, provider_id: str, token: TokenSet) -> bool:
        return bool(self._call(provider_id, "adconnect_revoke_token", bool | None, token=token))

    def required_scopes(self, provider_id: str, flow: str = "default") -> ScopeRequirement | None:
        result = self._subset(provider_id, "adconnect_required_scopes")(provider_id=provider_id, flow=flow)
        if result is not None and not isinstance(result, ScopeRequirement):
            raise PluginContractError(
                f"{provider_id}: adconnect_required_scopes returned {type(result).__name__}, "
                "expected ScopeRequirement or None",
                provider_id=provider_id,
            )
        return result

    def validate_credential(
        self, provider_id: str, token: TokenSet, flow: str = "default"
    ) -> CredentialReport:
        report = self._call(
            provider_id, "adconnect_validate_credential", CredentialReport, token=token, flow=flow
        )
        requirement = self.required_scopes(provider_id, flow)
        if requirement is not None and not report.missing_scopes:
            check = requirement.check(report.granted_scopes)
            if not check.satisfied:
                report = report.model_copy(update={"missing_scopes": check.missing})
        return report

    # --- discovery, sync, health -----------------------------------------------------------

    def discover_assets(self, provider_id: str, token: TokenSet) -> list[DiscoveredAsset]:
        return self._call(provider_id, "adconnect_discover_assets", list[DiscoveredAsset], token=token)

    def discover_metric_availability(
        self, provider_id: str, token: TokenSet, asset: DiscoveredAsset
    ) -> list[MetricAvailability]:
        return self._call(
            provider_id,
            "adconnect_discover_metric_availability",
            list[MetricAvailability],
            token=token,
            asset=asset,
        )

    def read_stream(self, provider_id: str, request: ReadRequest) -> Iterator[ReadMessage]:
        messages = self._subset(provider_id, "adconnect_read_stream")(
            provider_id=provider_id, request=request
        )
        if messages is None:
            raise PluginContractError(
                f"{provider_id}: adconnect_read_stream returned nothing", provider_id=provider_id
            )
        adapter: TypeAdapter[ReadMessage] = TypeAdapter(ReadMessage)
        for message in messages:
            yield _validated(message, ReadMessage, provider_id, "adconnect_read_stream", adapter)

    def check_connection(self, provider_id: str, context: ConnectionContext) -> ConnectionStatus:
        return self._call(provider_id, "adconnect_check_connection", ConnectionStatus, context=context)

    def create_emulator(self, provider_id: str, *, seed: int = 0, port: int = 0) -> Any:
        """The provider's emulator (not started), or None when it ships none."""
        from adconnect.testing.emulator import Emulator

        emulator = self._subset(provider_id, "adconnect_create_emulator")(
            provider_id=provider_id, seed=seed, port=port
        )
        if emulator is not None and not isinstance(emulator, Emulator):
            raise PluginContractError(
                f"{provider_id}: adconnect_create_emulator returned {type(emulator).__name__}, "
                "not an Emulator",
                provider_id=provider_id,
            )
        return emulator

    # --- events ----------------------------------------------------------------------------

    def notify_sync_started(self, event: SyncStarted) -> None:
        self._broadcast("adconnect_sync_started", event=event)

    def notify_sync_finished(self, event: SyncFinished) -> None:
        self._broadcast("adconnect_sync_finished", event=event)

    # --- internals -------------------------------------------------------------------------

    def _subset(self, provider_id: str, hook: str) -> Any:
        target = self.provider(provider_id)
        others = [p for pid, p in self._providers.items() if p is not target]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def _call(self, provider_id: str, hook: str, expected: Any, **kwargs: Any) -> Any:
        result = self._subset(provider_id, hook)(provider_id=provider_id, **kwargs)
        return _validated(result, expected, provider_id, hook)

    def _broadcast(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook)


def _validated(
    value: Any, expected: Any, provider_id: str, hook: str, adapter: TypeAdapter[Any] | None = None
) -> Any:
    """Check a plugin's return value against the contract type."""
    try:
        return (adapter or TypeAdapter(expected)).validate_python(value)
    except ValidationError as exc:
        raise PluginContractError(
            f"{provider_id}: {hook} returned a value that breaks the contract: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
            provider_id=provider_id,
        ) from None
