"""Building the plugin host: :func:`load_plugins`.

It creates the pluggy manager, adds the hookspecs, registers the default plugins, loads every
entry point of group ``adconnect`` (except those named in ``ADCONNECT_DISABLE_PLUGINS``) and
runs ``check_pending()``. Each plugin is registered on its own: a provider is first pre-checked
(contract version, provider id, duplicates, required hooks), then must describe itself and
declare its streams and metrics within the contract. A plugin that fails a step is refused,
recorded as a :class:`~adconnect.plugins.host.PluginProblem` and logged; the others keep
loading.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Iterable

import pluggy

from adconnect import hookspecs
from adconnect.errors import AdconnectError, PluginContractError
from adconnect.models import ProviderInfo
from adconnect.plugins.host import PluginHost, PluginProblem, PluginRecord, ProblemKind
from adconnect.provider import REQUIRED_HOOKS, Provider

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "contract_compatible", "load_plugins"]

log = logging.getLogger("adconnect.plugins")  # one logger for the package, as before the split

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
DEFAULT_PLUGINS = ("adconnect.default_plugins.event_log",)


def contract_compatible(declared: str, supported: str = hookspecs.CONTRACT_VERSION) -> bool:
    """Same major version, and the plugin's minor is not newer than the framework's."""
    try:
        d_major, d_minor = (int(p) for p in declared.split(".")[:2])
        s_major, s_minor = (int(p) for p in supported.split(".")[:2])
    except ValueError:
        return False
    return d_major == s_major and d_minor <= s_minor


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
