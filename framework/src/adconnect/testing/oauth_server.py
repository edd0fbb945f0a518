"""An OAuth 2.0 authorization server that any provider emulator can mount (stdlib only).

:class:`OAuthServer` serves the authorization-code grant the way RFC 6749, RFC 7636 (PKCE),
RFC 7009 (revocation) and RFC 9700 describe it: ``GET {prefix}/authorize`` checks the client
and the exact redirect URI and auto-approves with a 302 carrying ``code`` and ``state``;
``POST {prefix}/token`` handles ``authorization_code`` (single-use, expiring codes, PKCE S256,
exact redirect URI) and ``refresh_token`` (optional rotation, reuse detection), with
``client_secret_basic`` or ``client_secret_post``; ``POST {prefix}/revoke`` revokes tokens.
Errors are RFC 6749 JSON bodies. Every code and token it issues is recorded
(:attr:`OAuthServer.issued_secrets`) so tests can check none of them leaks.

Mount it on a provider emulator where the real API has it (``prefix`` and the three
``*_path`` settings; for Meta: ``prefix="/v21.0", authorize_path="/dialog/oauth",
token_path="/oauth/access_token", token_methods=("GET", "POST")``) or use
:class:`OAuthEmulator`, an emulator serving nothing else. Resource routes check tokens with
:meth:`OAuthServer.check_access_token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from adconnect.testing.emulator import Emulator, Handler
from adconnect.testing.emulator_http import Request, Response

__all__ = ["OAuthEmulator", "OAuthServer", "TokenInfo"]

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class TokenInfo:
    """What the server knows about a valid access token."""

    client_id: str
    subject: str
    scopes: frozenset[str]
    expires_at: float
    grant_id: str


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    expires_at: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class _Grant:
    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    refresh_token: str | None = None
    revoked: bool = False


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``: base64url(sha256) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _error(status: int, error: str, description: str, **headers: str) -> Response:
    return Response(
        status=status,
        json={"error": error, "error_description": description},
        headers={**_NO_STORE, **headers},
    )


class OAuthServer:
    """An emulated authorization server; every setting is a public, mutable attribute.

    :param granted_scopes: scopes granted on consent; ``None`` grants what was requested.
    :param approve: ``False`` makes the consent screen answer ``error=access_denied``.
    :param clock: seconds since the epoch; inject one to expire codes and tokens.
    """

    def __init__(
        self,
        *,
        client_id: str = "adconnect-test-client",
        client_secret: str = "adconnect-test-secret-0123456789",  # noqa: S107
        redirect_uris: Iterable[str] = ("http://127.0.0.1:8765/oauth/callback",),
        granted_scopes: Iterable[str] | None = None,
        scope_separator: str = " ",
        prefix: str = "/oauth",
        authorize_path: str = "/authorize",
        token_path: str = "/token",  # noqa: S107 - a URL path, not a password
        revoke_path: str = "/revoke",
        token_methods: Iterable[str] = ("POST",),
        access_token_ttl: int = 3600,
        code_ttl: float = 60.0,
        issue_refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = False,
        require_pkce: bool = False,
        auth_methods: Iterable[str] = ("client_secret_basic", "client_secret_post"),
        subject: str = "emulated-user-1",
        approve: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.granted_scopes = None if granted_scopes is None else tuple(granted_scopes)
        self.scope_separator = scope_separator
        self.prefix = prefix.rstrip("/")
        self.authorize_path = self.prefix + authorize_path
        self.token_path = self.prefix + token_path
        self.revoke_path = self.prefix + revoke_path
        self.token_methods = tuple(m.upper() for m in token_methods)
        self.access_token_ttl = access_token_ttl
        self.code_ttl = code_ttl
        self.issue_refresh_tokens = issue_refresh_tokens
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.require_pkce = require_pkce
        self.auth_methods = frozenset(auth_methods)
        self.subject = subject
        self.approve = approve
        self.clock = clock
        self._lock = threading.RLock()
        self.reset()

    # --- component protocol ----------------------------------------------------------------

    @property
    def authorize_route(self) -> str:
        return f"GET {self.authorize_path}"

    @property
    def token_route(self) -> str:
        method = "POST" if "POST" in self.token_methods else self.token_methods[0]
        return f"{method} {self.token_path}"

    @property
    def revoke_route(self) -> str:
        return f"POST {self.revoke_path}"

    def routes(self) -> Iterator[tuple[str, str, Handler]]:
        """The three endpoints (the token endpoint once per method in ``token_methods``)."""
        yield "GET", self.authorize_path, self.authorize
        for method in self.token_methods:
            yield method, self.token_path, self.token
        yield "POST", self.revoke_path, self.revoke

    def reset(self) -> None:
        """Forget every code, grant and token (settings are kept)."""
        with self._lock:
            self._codes: dict[str, _Code] = {}
            self._grants: dict[str, _Grant] = {}
            self._refresh: dict[str, str] = {}  # every refresh token ever issued -> grant id
            self._access: dict[str, TokenInfo] = {}
            self._revoked_access: set[str] = set()
            self._verifiers: set[str] = set()

    # --- inspection and test helpers -------------------------------------------------------

    @property
    def issued_secrets(self) -> frozenset[str]:
        """Every code, access token and refresh token issued since the last reset."""
        with self._lock:
            return frozenset(self._codes) | frozenset(self._access) | frozenset(self._refresh)

    def sensitive_values(self) -> frozenset[str]:
        """:attr:`issued_secrets` plus the client secret and every PKCE verifier received."""
        with self._lock:
            return self.issued_secrets | {self.client_secret} | frozenset(self._verifiers)

    def check_access_token(self, token: str | None) -> TokenInfo | None:
        """The token's info when it is known, unexpired and not revoked; else ``None``."""
        with self._lock:
            info = self._access.get(token or "")
            if info is None or token in self._revoked_access:
                return None
            if self._grants[info.grant_id].revoked or info.expires_at <= self.clock():
                return None
            return info

    def mint(self, scopes: Iterable[str] | None = None) -> dict[str, Any]:
        """Issue tokens without the browser dance; returns the token-endpoint JSON."""
        granted = tuple(scopes) if scopes is not None else (self.granted_scopes or ())
        with self._lock:
            return self._issue(self._new_grant(self.client_id, granted), with_refresh=True)

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (refresh tokens keep working)."""
        with self._lock:
            now = self.clock()
            for token, info in self._access.items():
                self._access[token] = TokenInfo(
                    info.client_id, info.subject, info.scopes, min(info.expires_at, now), info.grant_id
                )

    def revoke_all(self) -> None:
        """Revoke every grant, as a user removing the app would."""
        with self._lock:
            for grant in self._grants.values():
                grant.revoked = True

    # --- endpoints -------------------------------------------------------------------------

    def authorize(self, request: Request) -> Response:
        """The consent screen, auto-approving: 302 to the redirect URI with code and state."""
        q = request.query
        if q.get("client_id") != self.client_id:
            return _error(400, "invalid_request", "unknown client_id")
        redirect_uri = q.get("redirect_uri")
        if redirect_uri not in self.redirect_uris:  # exact string match, RFC 9700 §2.1
            return _error(400, "invalid_request", "redirect_uri is not registered")
        extra = {"state": q["state"]} if "state" in q else {}
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method", "plain")
        failure: tuple[str, str] | None = None
        if q.get("response_type") != "code":
            failure = ("unsupported_response_type", "only response_type=code is supported")
        elif challenge is not None and method != "S256":
            failure = ("invalid_request", "only code_challenge_method=S256 is supported")
        elif challenge is None and self.require_pkce:
            failure = ("invalid_request", "code_challenge required")
        elif not self.approve:
            failure = ("access_denied", "the user declined")
        if failure is not None:
            params = {"error": failure[0], "error_description": failure[1], **extra}
            return self._redirect(redirect_uri, params)
        requested = tuple(s for s in q.get("scope", "").split(self.scope_separator) if s.strip())
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                scopes=self.granted_scopes if self.granted_scopes is not None else requested,
                challenge=challenge,
                expires_at=self.clock() + self.code_ttl,
            )
        return self._redirect(redirect_uri, {"code": code, **extra})

    def token(self, request: Request) -> Response:
        """The token endpoint: ``authorization_code`` and ``refresh_token`` grants."""
        form = request.form() if request.method == "POST" else dict(request.query)
        client = self._authenticate(request, form)
        if isinstance(client, Response):
            return client
        grant_type = form.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                return self._code_grant(client, form)
            if grant_type == "refresh_token":
                return self._refresh_grant(client, form)
        if not grant_type:
            return _error(400, "invalid_request", "grant_type is required")
        return _error(400, "unsupported_grant_type", "unsupported grant_type")

    def revoke(self, request: Request) -> Response:
        """RFC 7009 revocation: 200 for any token, known or not; a refresh token ends its grant."""
        form = request.form()
        client = self._authenticate(request, form)
        if isinstance(client, Response):
            return client
        token = form.get("token")
        if not token:
            return _error(400, "invalid_request", "token is required")
        with self._lock:
            if token in self._refresh:
                self._grants[self._refresh[token]].revoked = True
            elif token in self._access:
                self._revoked_access.add(token)
        return Response(status=200, body=b"", headers=dict(_NO_STORE))

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _redirect(redirect_uri: str, params: dict[str, str]) -> Response:
        location = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}"
        return Response(status=302, headers={"Location": location, **_NO_STORE})

    def _authenticate(self, request: Request, form: dict[str, str]) -> str | Response:
        basic = request.basic_auth
        if basic is not None and "client_secret" in form:
            return _error(400, "invalid_request", "use one client authentication method")
        if basic is not None:
            method, (client_id, secret) = "client_secret_basic", basic
        elif "client_secret" in form:
            method, client_id, secret = (
                "client_secret_post",
                form.get("client_id", ""),
                form["client_secret"],
            )
        else:
            return _error(
                401,
                "invalid_client",
                "client authentication required",
                **{"WWW-Authenticate": 'Basic realm="emulator"'},
            )
        known = client_id == self.client_id and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )
        if method not in self.auth_methods or not known:
            challenge = {"WWW-Authenticate": 'Basic realm="emulator"'} if basic else {}
            return _error(401, "invalid_client", "client authentication failed", **challenge)
        return client_id

    def _code_grant(self, client_id: str, form: dict[str, str]) -> Response:
        code = form.get("code")
        if not code:
            return _error(400, "invalid_request", "code is required")
        record = self._codes.get(code)
        if record is None or record.client_id != client_id:
            return _error(400, "invalid_grant", "unknown authorization code")
        if record.used:  # RFC 6749 §4.1.2: a replayed code revokes what it issued
            if record.grant_id is not None:
                self._grants[record.grant_id].revoked = True
            return _error(400, "invalid_grant", "authorization code already used")
        record.used = True  # any redemption attempt burns the code
        if record.expires_at <= self.clock():
            return _error(400, "invalid_grant", "authorization code expired")
        if form.get("redirect_uri") != record.redirect_uri:
            return _error(400, "invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier")
        if verifier is not None:
            self._verifiers.add(verifier)
        if record.challenge is None and verifier is not None:  # RFC 9700 §2.1.1 downgrade
            return _error(400, "invalid_grant", "code_verifier sent without a code_challenge")
        if record.challenge is not None:
            if verifier is None or not _VERIFIER.match(verifier):
                return _error(400, "invalid_grant", "a valid code_verifier is required")
            if not hmac.compare_digest(s256(verifier), record.challenge):
                return _error(400, "invalid_grant", "PKCE verification failed")
        grant = self._new_grant(client_id, record.scopes)
        record.grant_id = grant.grant_id
        return Response(
            json=self._issue(grant, with_refresh=self.issue_refresh_tokens), headers=dict(_NO_STORE)
        )

    def _refresh_grant(self, client_id: str, form: dict[str, str]) -> Response:
        token = form.get("refresh_token")
        if not token:
            return _error(400, "invalid_request", "refresh_token is required")
        grant = self._grants.get(self._refresh.get(token, ""))
        if grant is None or grant.client_id != client_id or grant.revoked:
            return _error(400, "invalid_grant", "refresh token is invalid, expired or revoked")
        if token != grant.refresh_token:  # a rotated-out token came back: assume theft
            grant.revoked = True
            return _error(400, "invalid_grant", "refresh token was already used")
        asked = [s for s in form.get("scope", "").split(self.scope_separator) if s.strip()]
        if not set(asked) <= set(grant.scopes):
            return _error(400, "invalid_scope", "scope exceeds the original grant")
        return Response(
            json=self._issue(grant, with_refresh=self.rotate_refresh_tokens, scopes=tuple(asked) or None),
            headers=dict(_NO_STORE),
        )

    def _new_grant(self, client_id: str, scopes: tuple[str, ...]) -> _Grant:
        grant = _Grant(grant_id=secrets.token_hex(8), client_id=client_id, scopes=scopes)
        self._grants[grant.grant_id] = grant
        return grant

    def _issue(
        self, grant: _Grant, *, with_refresh: bool, scopes: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        scopes = scopes or grant.scopes
        access = secrets.token_urlsafe(32)
        self._access[access] = TokenInfo(
            grant.client_id,
            self.subject,
            frozenset(scopes),
            self.clock() + self.access_token_ttl,
            grant.grant_id,
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": self.scope_separator.join(scopes),
        }
        if with_refresh:
            refresh = secrets.token_urlsafe(48)
            grant.refresh_token = refresh
            self._refresh[refresh] = grant.grant_id
            body["refresh_token"] = refresh
        return body


class OAuthEmulator(Emulator):
    """An emulator serving only an :class:`OAuthServer` (at ``self.oauth``).

    Keyword arguments other than ``seed``, ``host`` and ``port`` configure the server.
    """

    def __init__(self, seed: int = 0, host: str = "127.0.0.1", port: int = 0, **oauth: Any) -> None:
        super().__init__(seed=seed, host=host, port=port)
        self.oauth = self.mount(OAuthServer(**oauth))

    @property
    def authorize_url(self) -> str:
        return f"{self.url}{self.oauth.authorize_path}"

    @property
    def token_url(self) -> str:
        return f"{self.url}{self.oauth.token_path}"

    @property
    def revoke_url(self) -> str:
        return f"{self.url}{self.oauth.revoke_path}"
