"""The one error hierarchy of adconnect, classified by what the caller must do.

Branches (each consumer maps them once: the runner decides pause / reschedule / fail / skip,
the reporting API decides the HTTP status and JSON body):

* :class:`ConfigurationError` - a human must change configuration; never retried.
* :class:`ReauthRequiredError` - the credential is dead (revoked, expired, invalid grant);
  the connection needs a new OAuth consent. State is kept.
* :class:`MissingScopesError` - the credential works but lacks permissions; re-consent
  asking for them.
* :class:`InvalidMetricError` - the provider rejects a metric; quarantine it, keep the rest.
* :class:`RetryableProviderError` - transient provider failure; retry, honouring
  ``retry_after``.
* :class:`FatalProviderError` - the provider refused the request for good; fail the run.
* :class:`BadRecordError` - one record cannot be loaded; count it, skip it, keep context.
* :class:`PluginContractError` - a plugin broke the contract; the plugin is refused.

Every error carries ``user_message`` (safe to show to an operator or an API client: no
secrets, no raw provider bodies) and an optional ``hint`` (what to do next). Raw provider
detail belongs in logs, after :func:`adconnect.redaction.redact`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AdconnectError",
    "BadRecordError",
    "ConfigurationError",
    "FatalProviderError",
    "InvalidMetricError",
    "MissingScopesError",
    "NotFoundError",
    "OAuthStateError",
    "PluginContractError",
    "ProviderError",
    "ReauthRequiredError",
    "RetryableProviderError",
]


class AdconnectError(Exception):
    """Root of every error adconnect raises on purpose.

    :param user_message: a one-line description safe to show to humans and API clients.
    :param hint: what the reader should do about it, if anything.
    :param code: a stable machine-readable code (``snake_case``) for API clients.
    :param provider_id: the provider involved, if any.
    """

    code: str = "adconnect_error"

    def __init__(
        self,
        user_message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        provider_id: str | None = None,
    ) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.hint = hint
        self.provider_id = provider_id
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The safe, structured form used by the CLI's ``--json`` output and the API."""
        body: dict[str, Any] = {"code": self.code, "message": self.user_message}
        if self.hint:
            body["hint"] = self.hint
        if self.provider_id:
            body["provider_id"] = self.provider_id
        return body


# --- a human must act ----------------------------------------------------------------------


class ConfigurationError(AdconnectError):
    """Settings, environment or operator input are wrong or missing; never retried."""

    code = "configuration_error"


class NotFoundError(ConfigurationError):
    """An object named by the caller (tenant, provider, connection) does not exist."""

    code = "not_found"


class OAuthStateError(ConfigurationError):
    """An OAuth ``state`` is invalid, expired, already used, or belongs to another flow.

    ``code`` tells which: ``invalid_oauth_state``, ``expired_oauth_state``,
    ``replayed_oauth_state``, ``wrong_oauth_flow``, ``oauth_state_mismatch``,
    ``redirect_uri_mismatch``.
    """

    code = "invalid_oauth_state"


class ReauthRequiredError(AdconnectError):
    """The credential no longer works; the connection must be re-authorised by a human."""

    code = "reauth_required"


class MissingScopesError(ReauthRequiredError):
    """The credential lacks required permissions.

    :param missing: the unsatisfied terms of the requirement, e.g.
        ``["ads_read OR ads_management", "business_management"]``.
    """

    code = "missing_scopes"

    def __init__(self, user_message: str, *, missing: Iterable[str], **kwargs: Any) -> None:
        super().__init__(user_message, **kwargs)
        self.missing = list(missing)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["missing"] = self.missing
        return body


class InvalidMetricError(AdconnectError):
    """The provider rejects a metric: quarantine it and continue with the others."""

    code = "invalid_metric"

    def __init__(self, user_message: str, *, metric_id: str, **kwargs: Any) -> None:
        super().__init__(user_message, **kwargs)
        self.metric_id = metric_id


# --- the provider failed -------------------------------------------------------------------


class ProviderError(AdconnectError):
    """A provider API call failed. Carries what the API error log records.

    :param status: HTTP (or gRPC) status, if any.
    :param provider_code: the provider's own error code (Meta ``code``, Google enum name).
    :param provider_subcode: the provider's subcode, if any.
    :param endpoint: the endpoint or RPC called, without query string or tokens.
    """

    code = "provider_error"

    def __init__(
        self,
        user_message: str,
        *,
        status: int | None = None,
        provider_code: str | int | None = None,
        provider_subcode: str | int | None = None,
        endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(user_message, **kwargs)
        self.status = status
        self.provider_code = provider_code
        self.provider_subcode = provider_subcode
        self.endpoint = endpoint

    @property
    def retryable(self) -> bool:
        return isinstance(self, RetryableProviderError)

    def log_fields(self) -> Mapping[str, Any]:
        """The columns of the API error log this error fills."""
        return {
            "endpoint": self.endpoint,
            "status_code": self.status,
            "error_code": None if self.provider_code is None else str(self.provider_code),
            "error_subcode": None if self.provider_subcode is None else str(self.provider_subcode),
            "message": self.user_message,
            "retryable": self.retryable,
        }


class RetryableProviderError(ProviderError):
    """A transient failure (rate limit, 5xx, timeout): retry after ``retry_after`` seconds."""

    code = "provider_retryable"

    def __init__(self, user_message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(user_message, **kwargs)
        self.retry_after = retry_after


class FatalProviderError(ProviderError):
    """The provider refused the request for good (bad query, unknown object): fail the run."""

    code = "provider_fatal"


# --- data and plugins ----------------------------------------------------------------------


class BadRecordError(AdconnectError):
    """One record cannot be loaded. The engine counts it, logs the context and skips it."""

    code = "bad_record"

    def __init__(
        self, user_message: str, *, stream: str, context: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(user_message, **kwargs)
        self.stream = stream
        self.context = dict(context or {})


class PluginContractError(AdconnectError):
    """A plugin does not honour the contract (bad return value, incompatible version...)."""

    code = "plugin_contract_violation"
