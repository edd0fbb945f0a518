"""The plugin host: the only code in adconnect that touches the pluggy ``PluginManager``.

:func:`load_plugins` builds a :class:`PluginHost`: it creates the pluggy manager, adds the
hookspecs, registers the default plugins, loads every entry point of group ``adconnect``
(except those named in ``ADCONNECT_DISABLE_PLUGINS``), refuses plugins built for an
incompatible contract or that break it, and runs ``check_pending()``. A plugin that fails is
recorded as a :class:`PluginProblem` - shown by ``adconnect providers list`` and
``adconnect doctor`` and logged - while the others keep working.

Everything else in adconnect calls the typed methods of :class:`PluginHost`; nothing else
touches ``pm.hook``. Provider hooks are called for one provider through
``subset_hook_caller``, so cross-cutting plugins' wrappers see every provider's calls.

- :mod:`adconnect.plugins.host`: :class:`PluginHost`, the typed facade over the hooks that
  validates every hook result against the contract, and its records of what loaded and what not.
- :mod:`adconnect.plugins.loading`: :func:`load_plugins`, registration, the provider
  pre-checks (contract version, provider id, duplicates, required hooks) and problem recording.

Import from here: ``from adconnect.plugins import PluginHost, load_plugins``.
"""

from __future__ import annotations

from adconnect.plugins.host import PluginHost, PluginProblem, PluginRecord, ProblemKind
from adconnect.plugins.loading import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, contract_compatible, load_plugins

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginProblem",
    "PluginRecord",
    "ProblemKind",
    "contract_compatible",
    "load_plugins",
]
