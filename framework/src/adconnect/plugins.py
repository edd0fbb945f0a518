"""The one door to the plugin manager.

:func:`load_plugins` builds a :class:`PluginHost`: it creates the pluggy manager, adds the
hookspecs, registers the default plugins, loads every entry point of group ``adconnect``
(except those named in ``ADCONNECT_DISABLE_PLUGINS``), refuses plugins built for an
incompatible contract or that break it, and runs ``check_pending()``. A plugin that fails is
recorded as a :class:`PluginProblem` - shown by ``adconnect providers list`` and
``adconnect doctor`` and logged - while the others keep working.

Everything else in adconnect calls the typed methods of :class:`PluginHost`; nothing else
touches ``pm.hook``. Provider hooks are called for one provider through
``subset_hook_caller``, so cross-cutting plugins' wrappers see every provider's calls.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy
from pydantic import TypeAdapter, ValidationError

from adconnect import hookspecs
from adconnect.errors import AdconnectError, NotFoundError, PluginContractError
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
from adconnect.provider import REQUIRED_HOOKS, Provider
from adconnect.scopes import ScopeRequirement

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginProblem",
    "PluginRecord",
    "contract_compatible",
    "load_plugins",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
DEFAULT_PLUGINS = ("adconnect.default_plugins.event_log",)

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


def contract_compatible(declared: str, supported: str = hookspecs.CONTRACT_VERSION) -> bool:
    """Same major version, and the plugin's minor is not newer than the framework's."""
    try:
        d_major, d_minor = (int(p) for p in declared.split(".")[:2])
        s_major, s_minor = (int(p) for p in supported.split(".")[:2])
    except ValueError:
        return False
    return d_major == s_major and d_minor <= s_minor


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


# --- building the host ---------------------------------------------------------------------


def _new_manager(trace: bool) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if trace:
        pm.trace.root.setwriter(lambda text: log.info("pluggy: %s", text.rstrip()))
        pm.enable_tracing()
    return pm


def load_plugins(
    *,
    entry_points: bool = True,
    extra: Iterable[object] = (),
    disabled: Iterable[str] = (),
    trace: bool = False,
) -> PluginHost:
    """Build the plugin host.

    :param entry_points: load installed plugins (group ``adconnect``); tests pass ``False``
        and hand their plugins in through ``extra``.
    :param extra: plugin objects to register (provider instances or cross-cutting plugins).
    :param disabled: entry-point names (provider ids) that must not load.
    :param trace: log every hook call (``ADCONNECT_TRACE_PLUGINS=1``).
    """
    import importlib

    host = PluginHost(pm=_new_manager(trace))
    blocked = set(disabled)
    for module_name in DEFAULT_PLUGINS:
        host.pm.register(importlib.import_module(module_name), name=module_name)
    for obj in extra:
        _register(host, obj, name=getattr(obj, "provider_id", None), dist=None)
    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else None
            if ep.name in blocked:
                host.problems.append(
                    PluginProblem(
                        ep.name,
                        "disabled",
                        "disabled by ADCONNECT_DISABLE_PLUGINS",
                        "remove it from ADCONNECT_DISABLE_PLUGINS to load it",
                        *(dist or (None, None)),
                    )
                )
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # any import failure is reported, never fatal
                _problem(
                    host,
                    ep.name,
                    "import_error",
                    f"cannot import {ep.value}: {type(exc).__name__}: {exc}",
                    f"reinstall the distribution ({dist[0] if dist else 'unknown'}) or "
                    f"disable it with ADCONNECT_DISABLE_PLUGINS={ep.name}",
                    dist,
                )
                continue
            if isinstance(obj, type):
                try:
                    obj = obj()
                except Exception as exc:
                    _problem(
                        host,
                        ep.name,
                        "import_error",
                        f"cannot instantiate {ep.value}: {type(exc).__name__}: {exc}",
                        "a provider class must be constructible without arguments",
                        dist,
                    )
                    continue
            _register(host, obj, name=ep.name, dist=dist)
    host.pm.check_pending()
    return host


def _problem(
    host: PluginHost, name: str, kind: ProblemKind, message: str, hint: str, dist: tuple[str, str] | None
) -> None:
    problem = PluginProblem(name, kind, message, hint, *(dist or (None, None)))
    host.problems.append(problem)
    log.warning("plugin %s not loaded (%s): %s", name, kind, message)


def _register(host: PluginHost, obj: object, *, name: str | None, dist: tuple[str, str] | None) -> None:
    """Register one plugin object, refusing it (and recording why) if it breaks the contract."""
    is_provider = isinstance(obj, Provider)
    label: str = name or str(getattr(obj, "__name__", type(obj).__name__))
    if is_provider:
        problem = _provider_precheck(host, obj, label)  # type: ignore[arg-type]
        if problem is not None:
            _problem(host, label, problem[0], problem[1], problem[2], dist)
            return
    try:
        host.pm.register(obj, name=label)
    except (ValueError, pluggy.PluginValidationError) as exc:
        _problem(
            host,
            label,
            "contract_violation",
            str(exc),
            "fix the hook implementation's name or arguments (see docs/hooks.md)",
            dist,
        )
        return
    unknown = [hc.name for hc in host.pm.get_hookcallers(obj) or [] if not hc.has_spec()]
    if unknown:
        host.pm.unregister(obj)
        _problem(
            host,
            label,
            "contract_violation",
            f"implements unknown hooks: {', '.join(sorted(set(unknown)))}",
            "a hook name is misspelled or the plugin needs a newer adconnect",
            dist,
        )
        return
    if not is_provider:
        return
    provider: Provider = obj  # type: ignore[assignment]
    host._providers[label] = provider
    try:
        info = host._call(label, "adconnect_describe_provider", ProviderInfo)
        if info.provider_id != label:
            raise PluginContractError(
                f"describes itself as {info.provider_id!r} but is registered as {label!r}"
            )
        host.streams(label)
        host.metrics(label)
    except AdconnectError as exc:
        del host._providers[label]
        host.pm.unregister(provider)
        _problem(
            host,
            label,
            "contract_violation",
            exc.user_message,
            "the plugin returns values the contract does not allow; upgrade or fix it",
            dist,
        )
        return
    except Exception as exc:
        del host._providers[label]
        host.pm.unregister(provider)
        _problem(
            host,
            label,
            "contract_violation",
            f"registration hooks raised {type(exc).__name__}: {exc}",
            "the plugin fails while describing itself; check its settings and version",
            dist,
        )
        return
    host.records[label] = PluginRecord(label, info, *(dist or (None, None)))


def _provider_precheck(
    host: PluginHost, provider: Provider, name: str
) -> tuple[ProblemKind, str, str] | None:
    declared = getattr(provider, "contract_version", None)
    if not isinstance(declared, str):
        return (
            "incompatible_contract",
            "declares no contract_version",
            f"set contract_version = {hookspecs.CONTRACT_VERSION!r} on the provider class",
        )
    if not contract_compatible(declared):
        return (
            "incompatible_contract",
            f"built for plugin contract {declared}, this adconnect speaks {hookspecs.CONTRACT_VERSION}",
            "install a version of the plugin built for this adconnect, or upgrade adconnect",
        )
    if getattr(provider, "provider_id", None) != name:
        return (
            "contract_violation",
            f"class provider_id {getattr(provider, 'provider_id', None)!r} differs from "
            f"entry-point name {name!r}",
            "make the entry-point name equal the provider id",
        )
    if name in host._providers:
        return (
            "duplicate",
            f"provider id {name!r} is already provided by another plugin",
            "uninstall one of the two distributions",
        )
    required = REQUIRED_HOOKS[None] + REQUIRED_HOOKS.get(provider.auth_kind, ())
    overridden = type(provider).overridden_hooks()
    missing = [h for h in required if h not in overridden or host.pm.parse_hookimpl_opts(provider, h) is None]
    if missing:
        return (
            "contract_violation",
            f"does not implement required hooks: {', '.join(missing)}",
            "implement them (the plugin template shows each one)",
        )
    return None
