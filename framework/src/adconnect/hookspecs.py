"""Hook specifications: the whole contract between adconnect and its plugins.

Conventions for every hook in this module:

* The framework calls hooks with keyword arguments only. An implementation may accept any
  subset of a hook's parameters; parameters are only ever added, never renamed or removed.
  A hook is retired with ``warn_on_impl``, never deleted within a contract major version.
* Provider hooks (every phase but *events*) are called for ONE provider at a time through
  ``PluginManager.subset_hook_caller``: the call sees that provider's implementation plus
  every cross-cutting plugin (plugins that are not providers). Cross-cutting plugins take
  part in provider hooks as ``wrapper=True`` implementations only - an audit log, the quota
  governor, an organisation's scope policy - and must pass results through.
* A provider hook is ``firstresult``: the provider's answer is the answer. The return
  annotation says what ONE implementation returns.
* Event hooks are broadcast to every plugin; their return values are ignored and an
  exception in one implementation is logged, not propagated.
* Every hook has a section in ``docs/hooks.md`` and a test named ``test_hook_<name>``;
  ``tests/test_contract_meta.py`` fails otherwise.

A provider plugin is a subclass of :class:`adconnect.Provider` whose methods carry
``@adconnect.hookimpl``; the base class supplies sensible defaults for optional hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
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
    from adconnect.testing.emulator import Emulator

PROJECT_NAME = "adconnect"
#: The contract version of this framework. A plugin declares the version it was built for;
#: it loads when the major versions are equal and its minor is not newer than ours.
CONTRACT_VERSION = "1.0"

_spec = pluggy.HookspecMarker(PROJECT_NAME)


# --- registration: called while plugins load and whenever the framework needs the facts ----


@_spec(firstresult=True)
def adconnect_describe_provider(provider_id: str) -> ProviderInfo:
    """Describe the provider: id, version, contract version, auth kind, capabilities.

    When: once while the plugin loads (the answer is validated, and a plugin whose
    ``provider_id`` or ``contract_version`` is wrong is refused), then whenever the CLI,
    doctor or runner need the facts.

    Return: a :class:`~adconnect.models.ProviderInfo`. ``provider_id`` must equal the
    entry-point name. ``settings_model`` is the pydantic-settings class that reads this
    provider's ``ADCONNECT_<PROVIDER>_*`` environment variables.

    Combine: firstresult - the provider's answer is used.
    """


@_spec(firstresult=True)
def adconnect_declare_streams(provider_id: str) -> list[StreamSpec]:
    """Declare the streams this provider can read.

    When: while the plugin loads (validated) and before every sync.

    Return: a list of :class:`~adconnect.models.StreamSpec` - record model, primary key,
    cursor field, default and maximum lookback, chunk size. Stream names are unique per
    provider and permanent: raw tables are named after them.

    Combine: firstresult.
    """


@_spec
def adconnect_declare_metrics(provider_id: str) -> list[MetricDefinition]:
    """Declare metric definitions for ``provider_id``.

    When: while the metric registry is seeded (``adconnect doctor``, migrations, the runner's
    start) and when the registry is listed.

    Return: a list of :class:`~adconnect.models.MetricDefinition` whose ids start with
    ``<provider_id>.``; an empty list when there are none. A cross-cutting plugin may add
    derived metrics for any provider; it must check ``provider_id``.

    Combine: all lists are concatenated; a metric id declared twice is a contract violation.
    """


# --- OAuth ---------------------------------------------------------------------------------


@_spec(firstresult=True)
def adconnect_build_authorization_url(provider_id: str, request: AuthorizationRequest) -> AuthorizationURL:
    """Build the URL that sends a user to the provider's consent screen.

    When: an operator or the API starts a connect flow. The framework has minted the signed,
    single-use ``state`` and the PKCE S256 challenge and checked the redirect URI.

    Return: an :class:`~adconnect.models.AuthorizationURL` carrying ``request.state``, the
    redirect URI unchanged, the sanitised scopes and those it ignored. Providers normally
    delegate to :class:`adconnect.oauth.OAuthClient`.

    Combine: firstresult.
    """


@_spec(firstresult=True)
def adconnect_exchange_code(provider_id: str, exchange: CodeExchange) -> TokenSet:
    """Exchange an authorization code for tokens.

    When: after the framework has consumed and verified the ``state`` of the callback.

    Return: a :class:`~adconnect.models.TokenSet`. Raise
    :class:`~adconnect.errors.ReauthRequiredError` for ``invalid_grant`` and
    :class:`~adconnect.errors.RetryableProviderError` for transient failures.

    Combine: firstresult.
    """


@_spec(firstresult=True)
def adconnect_refresh_token(provider_id: str, token: TokenSet) -> TokenSet | None:
    """Refresh a token before it expires.

    When: by the token lifecycle job, for tokens that expire soon, and before a sync whose
    token has expired.

    Return: the new :class:`~adconnect.models.TokenSet` (keep the old refresh token when the
    provider does not rotate it), or ``None`` when this provider's tokens cannot be
    refreshed. Raise :class:`~adconnect.errors.ReauthRequiredError` when the grant is gone.

    Combine: firstresult.
    """


@_spec(firstresult=True)
def adconnect_revoke_token(provider_id: str, token: TokenSet) -> bool:
    """Revoke a token at the provider (logout / disconnect).

    When: an operator disconnects a tenant. Credentials are deleted locally whatever the
    answer.

    Return: ``True`` when the provider confirmed revocation, ``False`` when it does not
    support it.

    Combine: firstresult.
    """


# --- scope validation ----------------------------------------------------------------------


@_spec(firstresult=True)
def adconnect_required_scopes(provider_id: str, flow: str) -> ScopeRequirement | None:
    """The scopes a credential must hold for ``flow``, as a scope expression.

    When: after every code exchange and refresh, and by ``adconnect doctor``.

    Return: a :class:`~adconnect.scopes.ScopeRequirement` such as
    ``(ads_read OR ads_management) AND business_management``, or ``None`` when nothing is
    required. A cross-cutting organisation policy may wrap this hook and AND extra terms.

    Combine: firstresult.
    """


@_spec(firstresult=True)
def adconnect_validate_credential(provider_id: str, token: TokenSet, flow: str) -> CredentialReport:
    """Check a credential at the provider: identity, scopes granted/declined, expiry.

    When: after every code exchange and refresh, and on the validation schedule.

    Return: a :class:`~adconnect.models.CredentialReport`. The framework evaluates the
    required scopes against ``granted_scopes`` itself and fills ``missing_scopes`` when the
    provider leaves it empty.

    Combine: firstresult.
    """


# --- discovery -----------------------------------------------------------------------------


@_spec(firstresult=True)
def adconnect_discover_assets(provider_id: str, token: TokenSet) -> list[DiscoveredAsset]:
    """List what the credential can reach: ad accounts, pages, customers, sources.

    When: after a connection is authorised and when an operator asks for discovery.

    Return: a list of :class:`~adconnect.models.DiscoveredAsset` (possibly empty). Never
    return assets the credential was not granted.

    Combine: firstresult.
    """


@_spec(firstresult=True)
def adconnect_discover_metric_availability(
    provider_id: str, token: TokenSet, asset: DiscoveredAsset
) -> list[MetricAvailability]:
    """Probe which metrics can be read for one asset.

    When: after discovery, and on the provider's metric-discovery schedule.

    Return: one :class:`~adconnect.models.MetricAvailability` per probed metric. Raise
    nothing for a single unsupported metric: report it as unavailable with a reason.

    Combine: firstresult.
    """


# --- sync ----------------------------------------------------------------------------------


@_spec(firstresult=True)
def adconnect_read_stream(provider_id: str, request: ReadRequest) -> Iterator[ReadMessage]:
    """Read one stream for one window, starting from a saved state.

    When: by the sync engine, once per stream and window chunk.

    Return: an iterator of :class:`~adconnect.models.RecordBatch` and
    :class:`~adconnect.models.StateCheckpoint`. A checkpoint covers every record yielded
    before it; the engine commits the records and the checkpoint in one transaction, so a
    crash never leaves state ahead of data. Raise errors from :mod:`adconnect.errors`.

    Combine: firstresult. Wrappers see the creation of the iterator, not its iteration.
    """


# --- health --------------------------------------------------------------------------------


@_spec(firstresult=True)
def adconnect_check_connection(provider_id: str, context: ConnectionContext) -> ConnectionStatus:
    """Report a connection's status with a reason code and recommended actions.

    When: the status API, ``adconnect doctor`` and the sync-health view ask for it.

    Return: a :class:`~adconnect.models.ConnectionStatus`. The base class derives one from
    the context (credential state, last run); providers override it to add their own reason
    codes and metadata.

    Combine: firstresult.
    """


# --- demos: emulators on loopback ----------------------------------------------------------


@_spec(firstresult=True)
def adconnect_create_emulator(provider_id: str, seed: int, port: int) -> Emulator | None:
    """Build (do not start) the provider's emulator: its API on loopback, with fake data.

    When: ``adconnect emulate <provider>`` (demos, local development) and by tests that want
    the emulator through the plugin rather than by import.

    Return: an :class:`adconnect.testing.emulator.Emulator` listening on ``port`` (0: any free
    port) whose data derives from ``seed``, or ``None`` when the provider ships none.

    Combine: firstresult.
    """


# --- events: broadcast to every plugin, return values ignored ------------------------------


@_spec
def adconnect_sync_started(event: SyncStarted) -> None:
    """Called when a sync of one stream starts, before the first provider call.

    When: by the sync engine, once per stream run.

    Return: nothing; an exception is logged with the plugin's name and does not stop the sync.

    Combine: every implementation is called.
    """


@_spec
def adconnect_sync_finished(event: SyncFinished) -> None:
    """Called when a sync of one stream has finished, after its data and state are committed.

    When: by the sync engine, once per stream run, whatever the outcome (``event.status``).

    Return: nothing; an exception is logged with the plugin's name.

    Combine: every implementation is called.
    """
