"""The base class of every provider plugin.

A provider plugin is a subclass of :class:`Provider` whose methods are ``@hookimpl``\\ s.
The entry point (group ``adconnect``, name = provider id) names the class; the framework
instantiates it with no arguments (settings are then read lazily from the environment) and
registers the instance. Tests instantiate it with explicit settings instead.

The base class implements the optional hooks with safe defaults, so a provider only writes
what it has: streams and reading are required; OAuth providers also implement the
authorization URL, the code exchange and credential validation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from adconnect._markers import hookimpl
from adconnect.errors import ConfigurationError
from adconnect.models import (
    AuthKind,
    Capability,
    ConnectionContext,
    ConnectionState,
    ConnectionStatus,
    CredentialStatus,
    DiscoveredAsset,
    MetricAvailability,
    MetricDefinition,
    ProviderInfo,
    ScheduleSpec,
    TokenSet,
)

__all__ = ["REQUIRED_HOOKS", "OAuthProviderSettings", "Provider", "ProviderSettings"]

#: Hooks every provider must implement itself, by auth kind.
REQUIRED_HOOKS: dict[AuthKind | None, tuple[str, ...]] = {
    None: ("adconnect_declare_streams", "adconnect_read_stream"),
    AuthKind.OAUTH2: (
        "adconnect_build_authorization_url",
        "adconnect_exchange_code",
        "adconnect_validate_credential",
    ),
}

# Optional hooks and the capability a provider gains by overriding them.
_CAPABILITY_HOOKS: dict[str, Capability] = {
    "adconnect_build_authorization_url": Capability.OAUTH,
    "adconnect_refresh_token": Capability.REFRESH,
    "adconnect_revoke_token": Capability.REVOKE,
    "adconnect_discover_assets": Capability.DISCOVERY,
    "adconnect_declare_metrics": Capability.METRICS,
    "adconnect_discover_metric_availability": Capability.METRIC_AVAILABILITY,
    "adconnect_check_connection": Capability.HEALTH,
    "adconnect_read_stream": Capability.SYNC,
}

#: A sync counts as recent for the default status when it finished within this long.
RECENT_SYNC = timedelta(minutes=60)


class ProviderSettings(BaseSettings):
    """Base for provider settings; subclasses set ``env_prefix='ADCONNECT_<PROVIDER>_'``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)


class OAuthProviderSettings(ProviderSettings):
    """Settings every OAuth provider has: its app credentials and registered redirect URIs."""

    client_id: str
    client_secret: SecretStr
    redirect_uri: str = Field(
        description="The callback URI registered with the provider; "
        "authorization requests must use exactly this string."
    )
    extra_redirect_uris: tuple[str, ...] = Field(
        default=(), description="More registered callback URIs (other environments)."
    )


class Provider:
    """Base class of provider plugins. Subclasses set the class attributes below."""

    provider_id: ClassVar[str]
    display_name: ClassVar[str]
    #: The contract version the plugin was built for (``adconnect.CONTRACT_VERSION`` then).
    contract_version: ClassVar[str]
    version: ClassVar[str] = "0.0.0"
    auth_kind: ClassVar[AuthKind] = AuthKind.OAUTH2
    settings_model: ClassVar[type[BaseSettings] | None] = None
    default_schedules: ClassVar[tuple[ScheduleSpec, ...]] = ()
    quota_scope: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def __init__(self, settings: BaseSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Any:
        """The provider's settings, read from the environment on first use."""
        if self._settings is None:
            if self.settings_model is None:
                raise ConfigurationError(f"{self.provider_id} declares no settings model")
            try:
                self._settings = self.settings_model()
            except ValidationError as exc:
                raise ConfigurationError(
                    f"{self.provider_id} settings are invalid: {settings_problems(exc)}",
                    hint=f"set the ADCONNECT_{self.provider_id.upper()}_* environment variables "
                    "(see the plugin's README)",
                    provider_id=self.provider_id,
                ) from None
        return self._settings

    def allowed_redirect_uris(self) -> tuple[str, ...]:
        """Redirect URIs a connect flow may use (exact strings, RFC 9700 section 2.1)."""
        settings = self.settings
        uris = (getattr(settings, "redirect_uri", None), *getattr(settings, "extra_redirect_uris", ()))
        return tuple(u for u in uris if u)

    @classmethod
    def overridden_hooks(cls) -> frozenset[str]:
        """Hook names this class implements itself rather than inheriting the default."""
        names = {n for n in dir(cls) if n.startswith("adconnect_")}
        return frozenset(n for n in names if getattr(cls, n) is not getattr(Provider, n, None))

    # --- registration ----------------------------------------------------------------------

    @hookimpl
    def adconnect_describe_provider(self) -> ProviderInfo:
        overridden = self.overridden_hooks()
        return ProviderInfo(
            provider_id=self.provider_id,
            display_name=self.display_name,
            version=self.version,
            contract_version=self.contract_version,
            auth_kind=self.auth_kind,
            capabilities=frozenset(c for h, c in _CAPABILITY_HOOKS.items() if h in overridden),
            settings_model=self.settings_model,
            default_schedules=self.default_schedules,
            quota_scope=self.quota_scope,
            description=self.description,
        )

    @hookimpl
    def adconnect_declare_metrics(self) -> list[MetricDefinition]:
        return []

    # --- OAuth and scopes ------------------------------------------------------------------

    @hookimpl
    def adconnect_refresh_token(self, token: TokenSet) -> TokenSet | None:
        return None

    @hookimpl
    def adconnect_revoke_token(self, token: TokenSet) -> bool:
        return False

    @hookimpl
    def adconnect_required_scopes(self, flow: str) -> None:
        return None

    # --- discovery -------------------------------------------------------------------------

    @hookimpl
    def adconnect_discover_assets(self, token: TokenSet) -> list[DiscoveredAsset]:
        return []

    @hookimpl
    def adconnect_discover_metric_availability(
        self, token: TokenSet, asset: DiscoveredAsset
    ) -> list[MetricAvailability]:
        return []

    # --- demos -----------------------------------------------------------------------------

    @hookimpl
    def adconnect_create_emulator(self, seed: int, port: int) -> None:
        return None

    # --- health ----------------------------------------------------------------------------

    @hookimpl
    def adconnect_check_connection(self, context: ConnectionContext) -> ConnectionStatus:
        return default_connection_status(context)


def default_connection_status(context: ConnectionContext, *, now: datetime | None = None) -> ConnectionStatus:
    """The status most providers want, derived from what the framework knows."""
    now = now or datetime.now(UTC)

    def status(state: ConnectionState, code: str, message: str, *actions: str) -> ConnectionStatus:
        return ConnectionStatus(
            status=state,
            reason_code=code,
            reason_message=message,
            actions=actions,
            last_checked_at=now,
            last_synced_at=context.last_synced_at,
        )

    if context.token is None or context.credential_status is None:
        return status(
            ConnectionState.NOT_CONNECTED,
            "missing_credential",
            "No credential is stored for this connection.",
            "connect_oauth",
        )
    if context.credential_status in (CredentialStatus.REAUTH_REQUIRED, CredentialStatus.INVALID):
        return status(
            ConnectionState.STARTED_NOT_COMPLETE,
            "credential_reauth_required",
            "The credential must be re-authorised.",
            "connect_oauth",
        )
    if context.connection.external_account_id is None:
        return status(
            ConnectionState.STARTED_NOT_COMPLETE,
            "missing_asset_selection",
            "Select the account this connection syncs.",
            "select_assets",
        )
    if not context.enabled:
        return status(
            ConnectionState.COMPLETE,
            "provider_disabled",
            "The provider is disabled for this tenant; schedules are stopped.",
            "enable_provider",
        )
    if context.last_run_status == "failed":
        return status(
            ConnectionState.COMPLETE,
            "last_sync_failed",
            f"The last sync failed ({context.last_error_class or 'unknown error'}).",
            "sync_now",
            "view",
        )
    if context.last_synced_at is not None and now - context.last_synced_at <= RECENT_SYNC:
        return status(ConnectionState.ACTIVE, "active_sync", "Data is fresh.", "view")
    return status(
        ConnectionState.COMPLETE,
        "awaiting_recent_successful_sync",
        "Connected; waiting for a recent successful sync.",
        "sync_now",
    )


def settings_problems(exc: ValidationError) -> str:
    """Summarise a settings validation error by field, never echoing values."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
