"""Typed models for everything that crosses the plugin contract (pydantic v2).

Plugins return these from hooks and receive them as hook arguments; the framework validates
every value a plugin hands back (see :mod:`adconnect.plugins`), so a plugin that returns a
malformed object is reported as a contract violation instead of failing somewhere later.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings

__all__ = [
    "PROVIDER_ID_PATTERN",
    "AuthKind",
    "AuthorizationRequest",
    "AuthorizationURL",
    "Capability",
    "CodeExchange",
    "ConnectionContext",
    "ConnectionRef",
    "ConnectionState",
    "ConnectionStatus",
    "CredentialReport",
    "CredentialStatus",
    "DiscoveredAsset",
    "MetricAvailability",
    "MetricDefinition",
    "MetricStatus",
    "ProviderInfo",
    "ReadMessage",
    "ReadRequest",
    "RecordBatch",
    "ScheduleSpec",
    "StateCheckpoint",
    "StreamSpec",
    "StreamState",
    "SyncFinished",
    "SyncStarted",
    "SyncWindow",
    "TokenSet",
]

PROVIDER_ID_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
_SNAKE = re.compile(PROVIDER_ID_PATTERN)


def _snake(value: str) -> str:
    if not _SNAKE.match(value) or len(value) > 63:
        raise ValueError(f"{value!r} must be snake_case (a-z, 0-9, single underscores), <= 63 chars")
    return value


SnakeId = Annotated[str, AfterValidator(_snake)]


class _Model(BaseModel):
    # revalidate: a plugin handing back a model built with model_copy(update=...) or
    # model_construct() is still checked when it crosses the contract.
    model_config = ConfigDict(frozen=True, extra="forbid", revalidate_instances="always")


# --- registration --------------------------------------------------------------------------


class AuthKind(StrEnum):
    """How a provider authenticates tenants."""

    OAUTH2 = "oauth2"
    API_KEY = "api_key"
    SERVICE = "service"  # platform-level credentials only (e.g. an Airbyte server token)


class Capability(StrEnum):
    """What a provider implements beyond registration and sync."""

    OAUTH = "oauth"
    REFRESH = "refresh"
    REVOKE = "revoke"
    DISCOVERY = "discovery"
    METRICS = "metrics"
    METRIC_AVAILABILITY = "metric_availability"
    HEALTH = "health"
    SYNC = "sync"


class ScheduleSpec(_Model):
    """A default schedule a provider proposes; operators may override it per connection.

    ``cron`` is a 5-field crontab expression (minute hour day month day-of-week, with day
    names for day-of-week) evaluated in the platform time zone (America/Jamaica by default).
    """

    name: SnakeId
    cron: str
    streams: tuple[str, ...] | None = None
    description: str = ""

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"cron {value!r} must have 5 fields")
        return value


class ProviderInfo(_Model):
    """Who a provider is; returned by ``adconnect_describe_provider``."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, revalidate_instances="always"
    )

    provider_id: SnakeId
    display_name: str
    version: str
    contract_version: str
    auth_kind: AuthKind
    capabilities: frozenset[Capability] = frozenset()
    settings_model: type[BaseSettings] | None = None
    default_schedules: tuple[ScheduleSpec, ...] = ()
    quota_scope: str | None = Field(
        default=None,
        description="Name of the credential scope whose API quota is shared across tenants "
        "(one Meta app, one Google Ads developer token).",
    )
    description: str = ""


class StreamSpec(_Model):
    """One stream a provider can read: its record model, key, cursor and lookback."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, revalidate_instances="always"
    )

    name: SnakeId
    record_model: type[BaseModel]
    primary_key: tuple[str, ...]
    cursor_field: str | None = None
    default_lookback: timedelta = timedelta(0)
    max_lookback: timedelta | None = None
    chunk: timedelta | None = Field(
        default=None, description="Longest window read and committed as one unit (one transaction)."
    )
    data_delay: timedelta = Field(
        default=timedelta(0), description="How long the provider takes to have data for a moment."
    )
    default_backfill: timedelta = Field(
        default=timedelta(days=30), description="How far back the first sync (or a full refresh) reads."
    )
    description: str = ""

    @model_validator(mode="after")
    def _fields_exist(self) -> StreamSpec:
        fields = self.record_model.model_fields
        if not self.primary_key:
            raise ValueError(f"stream {self.name!r} declares no primary key")
        unknown = [f for f in self.primary_key if f not in fields]
        if unknown:
            raise ValueError(f"stream {self.name!r}: primary key fields {unknown} not in record model")
        if self.cursor_field is not None and self.cursor_field not in fields:
            raise ValueError(f"stream {self.name!r}: cursor field {self.cursor_field!r} not in record model")
        if self.max_lookback is not None and self.default_lookback > self.max_lookback:
            raise ValueError(f"stream {self.name!r}: default lookback exceeds max lookback")
        return self


# --- OAuth and credentials -----------------------------------------------------------------


class TokenSet(_Model):
    """Tokens from an OAuth exchange or refresh. Secrets are ``SecretStr``: they never print."""

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: AwareDatetime | None = None
    scopes: frozenset[str] = frozenset()
    identity: str | None = Field(default=None, description="Provider user/app id, not secret.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Non-secret extras.")

    def expires_within(self, delta: timedelta, *, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at - now <= delta


class AuthorizationRequest(_Model):
    """What the framework hands a provider to build an authorization URL.

    The framework has already minted ``state`` (signed, single-use, 600 s) and the PKCE
    challenge; the provider adds its endpoint, client id and scopes.
    """

    state: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: Literal["S256"] = "S256"
    flow: SnakeId = "default"
    scopes: tuple[str, ...] | None = None
    options: dict[str, str] = Field(default_factory=dict)


class AuthorizationURL(_Model):
    """The URL to send the user to, and the scopes it asks for after sanitising."""

    url: str
    scopes: tuple[str, ...] = ()
    ignored_scopes: tuple[str, ...] = ()


class CodeExchange(_Model):
    """An authorization code coming back from the provider, with the PKCE verifier."""

    code: SecretStr
    redirect_uri: str
    code_verifier: SecretStr
    flow: SnakeId = "default"


class CredentialStatus(StrEnum):
    VALID = "valid"
    EXPIRING = "expiring"
    INVALID = "invalid"
    REAUTH_REQUIRED = "reauth_required"


class CredentialReport(_Model):
    """What a credential can do: identity, granted/declined/missing scopes, expiry."""

    status: CredentialStatus
    identity: str | None = None
    identity_name: str | None = None
    granted_scopes: frozenset[str] = frozenset()
    declined_scopes: frozenset[str] = frozenset()
    missing_scopes: tuple[str, ...] = ()
    expires_at: AwareDatetime | None = None
    reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.status in (CredentialStatus.VALID, CredentialStatus.EXPIRING) and not self.missing_scopes


# --- discovery and metrics -----------------------------------------------------------------


class DiscoveredAsset(_Model):
    """Something a tenant can select: an ad account, a page, a customer, an Airbyte source."""

    asset_id: str
    kind: SnakeId
    name: str
    parent_id: str | None = None
    currency: str | None = None
    timezone: str | None = None
    selectable: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)


class MetricStatus(StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class MetricDefinition(_Model):
    """A metric a provider can deliver. ``metric_id`` is ``<provider_id>.<metric>``, permanent."""

    metric_id: str
    level: SnakeId
    unit: Literal["count", "currency", "micros", "ratio", "percent", "seconds", "json"] = "count"
    periods: tuple[str, ...] = ("day",)
    status: MetricStatus = MetricStatus.ACTIVE
    replacement: str | None = None
    required_scopes: str | None = Field(default=None, description="A scope expression.")
    title: str = ""
    description: str = ""
    is_default: bool = False
    supports_breakdowns: bool = False

    @field_validator("metric_id", "replacement")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is None:
            return value
        provider, _, name = value.partition(".")
        _snake(provider)
        if not name or not re.match(r"^[a-z0-9_]+$", name):
            raise ValueError(f"metric id {value!r} must be <provider_id>.<snake_name>")
        return value

    @property
    def provider_id(self) -> str:
        return self.metric_id.split(".", 1)[0]


class MetricAvailability(_Model):
    """Whether a metric can be read for one asset, and why not."""

    metric_id: str
    asset_id: str
    available: bool
    reason: str | None = None


# --- sync ----------------------------------------------------------------------------------


class SyncWindow(_Model):
    """A half-open window ``[start, end)`` of source time, timezone-aware."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> SyncWindow:
        if self.start > self.end:
            raise ValueError("window start is after its end")
        return self

    def chunks(self, size: timedelta) -> Iterator[SyncWindow]:
        """Split into consecutive windows of at most ``size``."""
        if size <= timedelta(0):
            raise ValueError("chunk size must be positive")
        cursor = self.start
        while cursor < self.end:
            nxt = min(cursor + size, self.end)
            yield SyncWindow(start=cursor, end=nxt)
            cursor = nxt


class StreamState(_Model):
    """The saved state of one stream of one connection (opaque to the framework)."""

    stream: SnakeId
    state: dict[str, Any] = Field(default_factory=dict)
    updated_at: AwareDatetime | None = None


class ConnectionRef(_Model):
    """Which tenant connection a call is for."""

    connection_id: UUID
    tenant_id: UUID
    provider_id: SnakeId
    external_account_id: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ReadRequest(_Model):
    """Read ONE stream for ONE window, starting from ``state``."""

    connection: ConnectionRef
    stream: SnakeId
    window: SyncWindow
    state: dict[str, Any] | None = None
    token: TokenSet | None = None
    invalid_metrics: frozenset[str] = Field(
        default=frozenset(), description="Metric ids quarantined as invalid: do not request them."
    )


class RecordBatch(_Model):
    """Records of one stream; each dict is validated against the stream's record model."""

    stream: SnakeId
    records: tuple[dict[str, Any], ...]


class StateCheckpoint(_Model):
    """The state after every record yielded before it. Committed with those records."""

    stream: SnakeId
    state: dict[str, Any]


ReadMessage = RecordBatch | StateCheckpoint


# --- health --------------------------------------------------------------------------------


class ConnectionState(StrEnum):
    NOT_CONNECTED = "not_connected"
    STARTED_NOT_COMPLETE = "started_not_complete"
    COMPLETE = "complete"
    ACTIVE = "active"


class ConnectionContext(_Model):
    """What the framework knows about a connection when it asks for its status."""

    connection: ConnectionRef
    enabled: bool
    token: TokenSet | None = None
    credential_status: CredentialStatus | None = None
    last_synced_at: AwareDatetime | None = None
    last_run_status: str | None = None
    last_error_class: str | None = None


class ConnectionStatus(_Model):
    """Status payload: status, reason code + message, recommended actions."""

    status: ConnectionState
    reason_code: SnakeId
    reason_message: str
    actions: tuple[SnakeId, ...] = ()
    last_checked_at: AwareDatetime | None = None
    last_synced_at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# --- events --------------------------------------------------------------------------------


class SyncStarted(_Model):
    run_id: UUID
    connection: ConnectionRef
    stream: SnakeId
    window: SyncWindow


class SyncFinished(_Model):
    run_id: UUID
    connection: ConnectionRef
    stream: SnakeId
    window: SyncWindow
    status: Literal["succeeded", "failed", "partial", "cancelled"]
    records_read: int = 0
    error_class: str | None = None
