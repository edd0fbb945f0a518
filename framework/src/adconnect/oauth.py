"""The generic OAuth 2.0 authorization-code client that providers configure.

A provider describes its authorization server with :class:`OAuthClientConfig` and lets
:class:`OAuthClient` build the authorization URL (scopes sanitised, ``state``, PKCE S256),
exchange the code, refresh and revoke tokens. The client is the only place that maps
token-endpoint answers onto :mod:`adconnect.errors`:

* ``invalid_grant`` -> :class:`ReauthRequiredError` (never retried);
* ``invalid_client`` / ``unauthorized_client`` / HTTP 401 -> :class:`ConfigurationError`;
* HTTP 429 / 5xx, timeouts, connection errors -> :class:`RetryableProviderError`
  (``retry_after`` from ``Retry-After``);
* any other refusal -> :class:`FatalProviderError`.

Error messages carry the provider's ``error`` code and at most a short, redacted
``error_description``: never a token, code, verifier or client secret. Every secret the client
sends or receives is registered with :mod:`adconnect.redaction`.

Token responses are parsed with the helpers of :mod:`adconnect.oauth_responses`. The signed,
single-use ``state`` store lives in :mod:`adconnect.oauth_states` and is re-exported here
(:class:`OAuthStates`, :class:`IssuedState`, :class:`ConsumedState`).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from adconnect.errors import (
    ConfigurationError,
    FatalProviderError,
    ReauthRequiredError,
    RetryableProviderError,
)
from adconnect.models import AuthorizationRequest, AuthorizationURL, CodeExchange, TokenSet
from adconnect.oauth_responses import (
    TokenResponse,
    endpoint_of,
    error_fields,
    retry_after,
    safe_text,
)
from adconnect.oauth_states import ConsumedState, IssuedState, OAuthStates
from adconnect.redaction import register_secret
from adconnect.scopes import sanitize_scopes

__all__ = [
    "ConsumedState",
    "IssuedState",
    "OAuthClient",
    "OAuthClientConfig",
    "OAuthStates",
]

log = logging.getLogger(__name__)

ErrorKind = Literal["reauth", "configuration", "retryable", "fatal"]
#: Authorization parameters the client owns; extras may not override them.
RESERVED_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    }
)
_DEFAULT_KINDS: dict[str, ErrorKind] = {
    "invalid_grant": "reauth",
    "invalid_client": "configuration",
    "unauthorized_client": "configuration",
    "temporarily_unavailable": "retryable",
}
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class OAuthClientConfig(BaseModel):
    """A provider's authorization server and this platform's client registration there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_id: str | None = Field(default=None, description="Named in errors and logs.")
    authorize_url: str
    token_url: str
    revoke_url: str | None = None
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scopes: tuple[str, ...] = ()
    scope_separator: str = Field(default=" ", min_length=1)
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)
    token_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"  # noqa: S105 - a method name, not a secret
    use_pkce: bool = True
    timeout: float = Field(default=30.0, gt=0)
    error_kinds: dict[str, ErrorKind] = Field(
        default_factory=dict,
        description="Provider error codes (RFC 6749 `error`, or Meta's numeric `error.code`) "
        "mapped to an error class, on top of the RFC defaults (e.g. {'190': 'reauth'}).",
    )

    @field_validator("authorize_url", "token_url", "revoke_url")
    @classmethod
    def _secure_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if not parts.hostname or parts.fragment or not (parts.scheme == "https" or loopback):
            raise ValueError(
                f"{value!r} must be an https URL without fragment "
                "(plain http only on loopback, for emulators)"
            )
        return value

    @field_validator("extra_authorize_params")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        clash = RESERVED_PARAMS & value.keys()
        if clash:
            raise ValueError(f"extra_authorize_params may not set {sorted(clash)}")
        return value

    @property
    def display_name(self) -> str:
        return self.provider_id or urlsplit(self.token_url).hostname or "provider"


class OAuthClient:
    """Authorization URL, code exchange, refresh and revocation for one provider.

    :param http: an ``httpx.Client`` to use (closed by its owner); default: the client's own.
    :param clock: current aware UTC time, for ``expires_at`` (injectable in tests).
    """

    def __init__(
        self,
        config: OAuthClientConfig,
        http: httpx.Client | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(follow_redirects=False)
        self._now = clock or (lambda: datetime.now(UTC))
        register_secret(config.client_secret.get_secret_value())

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> OAuthClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the flow --------------------------------------------------------------------------

    def authorization_url(
        self,
        request: AuthorizationRequest,
        *,
        scopes: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
        ignore_prefixes: Iterable[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> AuthorizationURL:
        """The URL to send the user to.

        Scopes come from ``scopes``, else ``request.scopes``, else the config, and are
        sanitised (``ignore``/``ignore_prefixes`` are dropped and reported). Extra parameters
        (config, ``request.options``, ``extra``; later wins) may not override the client's own.
        """
        wanted = (
            scopes
            if scopes is not None
            else (request.scopes if request.scopes is not None else self.config.scopes)
        )
        kept, ignored = sanitize_scopes(wanted, ignore=ignore, ignore_prefixes=ignore_prefixes)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
        }
        if kept:
            params["scope"] = self.config.scope_separator.join(kept)
        if self.config.use_pkce:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = request.code_challenge_method
        for source in (self.config.extra_authorize_params, request.options, extra or {}):
            clash = RESERVED_PARAMS & source.keys()
            if clash:
                raise ConfigurationError(
                    f"authorization parameters {sorted(clash)} are set by the OAuth client",
                    provider_id=self.config.provider_id,
                )
            params.update(source)
        base = urlsplit(self.config.authorize_url)
        query = [*parse_qsl(base.query, keep_blank_values=True), *params.items()]
        url = urlunsplit(base._replace(query=urlencode(query, quote_via=quote)))
        return AuthorizationURL(url=url, scopes=kept, ignored_scopes=ignored)

    def exchange_code(self, exchange: CodeExchange) -> TokenSet:
        """Trade an authorization code (and PKCE verifier) for tokens."""
        code = exchange.code.get_secret_value()
        verifier = exchange.code_verifier.get_secret_value()
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": exchange.redirect_uri}
        if self.config.use_pkce:
            data["code_verifier"] = verifier
        response = self._post(self.config.token_url, data, "code exchange", (code, verifier))
        return self._token_set(response, "code exchange")

    def refresh(self, token: TokenSet) -> TokenSet:
        """New access token from the refresh token; keeps the old refresh token if none comes.

        :raises ReauthRequiredError: no refresh token, or the server says ``invalid_grant``.
        """
        if token.refresh_token is None:
            raise ReauthRequiredError(
                f"{self.config.display_name}: the credential has no refresh token",
                hint="reconnect the account",
                provider_id=self.config.provider_id,
            )
        refresh = token.refresh_token.get_secret_value()
        data = {"grant_type": "refresh_token", "refresh_token": refresh}
        response = self._post(self.config.token_url, data, "token refresh", (refresh,))
        new = self._token_set(response, "token refresh")
        return TokenSet(
            access_token=new.access_token,
            refresh_token=new.refresh_token or token.refresh_token,
            token_type=new.token_type,
            expires_at=new.expires_at,
            scopes=new.scopes or token.scopes,
            identity=token.identity,
            metadata=dict(token.metadata),
        )

    def revoke(self, token: TokenSet) -> bool:
        """Revoke the grant (RFC 7009): the refresh token if any, else the access token.

        Returns ``False`` when the provider has no revocation endpoint.
        """
        if self.config.revoke_url is None:
            return False
        secret, hint = (
            (token.refresh_token, "refresh_token")
            if token.refresh_token
            else (token.access_token, "access_token")
        )
        value = secret.get_secret_value()
        self._post(
            self.config.revoke_url, {"token": value, "token_type_hint": hint}, "token revocation", (value,)
        )
        return True

    # --- HTTP and error mapping ------------------------------------------------------------

    def _post(self, url: str, data: dict[str, str], action: str, secrets: Iterable[str]) -> httpx.Response:
        secrets = (*secrets, self.config.client_secret.get_secret_value())
        for value in secrets:
            register_secret(value)
        headers = {"Accept": "application/json"}
        form = dict(data)
        client_secret = self.config.client_secret.get_secret_value()
        if self.config.token_auth_method == "client_secret_basic":  # noqa: S105
            pair = f"{quote_plus(self.config.client_id)}:{quote_plus(client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.config.client_id
            form["client_secret"] = client_secret
        name, endpoint = self.config.display_name, endpoint_of(url)
        try:
            response = self.http.post(url, data=form, headers=headers, timeout=self.config.timeout)
        except httpx.TimeoutException as exc:
            log.warning("%s %s timed out (%s)", name, action, type(exc).__name__)
            raise RetryableProviderError(
                f"{name}: {action} timed out", endpoint=endpoint, provider_id=self.config.provider_id
            ) from None
        except httpx.TransportError as exc:
            log.warning("%s %s failed: %s", name, action, type(exc).__name__)
            raise RetryableProviderError(
                f"{name}: {action} failed ({type(exc).__name__})",
                endpoint=endpoint,
                provider_id=self.config.provider_id,
            ) from None
        except httpx.HTTPError as exc:
            raise FatalProviderError(
                f"{name}: {action} failed ({type(exc).__name__})",
                endpoint=endpoint,
                provider_id=self.config.provider_id,
            ) from None
        if not response.is_success:
            self._raise_for(response, action, endpoint, secrets)
        return response

    def _raise_for(
        self, response: httpx.Response, action: str, endpoint: str, secrets: Iterable[str]
    ) -> NoReturn:
        status = response.status_code
        error, description, subcode = error_fields(response)
        code = error if error and _SAFE_CODE.match(error) else None
        kind = self._classify(status, code)
        detail = safe_text(description, secrets)
        name, provider_id = self.config.display_name, self.config.provider_id
        message = f"{name}: {action} refused (HTTP {status}{', ' + code if code else ''})"
        message += f": {detail}" if detail else ""
        log.warning("%s %s refused: status=%s error=%s kind=%s", name, action, status, code, kind)
        if kind == "reauth":
            raise ReauthRequiredError(
                message, hint="reconnect the account (new consent)", provider_id=provider_id
            )
        if kind == "configuration":
            raise ConfigurationError(
                message, provider_id=provider_id, hint="check the OAuth client id, secret and auth method"
            )
        safe_subcode = subcode if isinstance(subcode, int) else None
        fields: dict[str, Any] = {
            "status": status,
            "provider_code": code,
            "provider_subcode": safe_subcode,
            "endpoint": endpoint,
            "provider_id": provider_id,
        }
        if kind == "retryable":
            raise RetryableProviderError(
                message, retry_after=retry_after(response.headers.get("Retry-After"), self._now()), **fields
            )
        raise FatalProviderError(message, **fields)

    def _classify(self, status: int, error: str | None) -> ErrorKind:
        if status == 429 or status >= 500:
            return "retryable"
        if error is not None:
            kind = self.config.error_kinds.get(error) or _DEFAULT_KINDS.get(error)
            if kind is not None:
                return kind
        return "configuration" if status == 401 else "fatal"

    def _token_set(self, response: httpx.Response, action: str) -> TokenSet:
        try:
            body = TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError):  # never chain: the input may hold a token
            raise FatalProviderError(
                f"{self.config.display_name}: {action} returned an unusable token response",
                status=response.status_code,
                endpoint=endpoint_of(str(response.request.url)),
                provider_id=self.config.provider_id,
            ) from None
        register_secret(body.access_token.get_secret_value())
        if body.refresh_token is not None:
            register_secret(body.refresh_token.get_secret_value())
        expires_at = None if body.expires_in is None else self._now() + timedelta(seconds=body.expires_in)
        return TokenSet(
            access_token=body.access_token,
            refresh_token=body.refresh_token,
            token_type=body.token_type,
            expires_at=expires_at,
            scopes=frozenset(self._split_scopes(body.scope)),
        )

    def _split_scopes(self, scope: str | list[str] | None) -> list[str]:
        if scope is None:
            return []
        if isinstance(scope, str):
            sep = self.config.scope_separator
            scope = scope.split() if sep.isspace() else scope.split(sep)
        return [s.strip() for s in scope if s.strip()]
