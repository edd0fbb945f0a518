"""The OAuth ``state`` store: signed, expiring, single-use, bound to tenant, user and flow.

RFC 9700 §2.1 asks clients to protect the redirect with a one-time CSRF token bound to the
initiating session, and to match redirect URIs exactly. :class:`OAuthStates` does both:

* :meth:`OAuthStates.issue` refuses a redirect URI that is not exactly registered, records a
  random nonce in ``oauth_states`` (inside the tenant's RLS transaction) and returns a state
  token signed with itsdangerous (payload ``{nonce, tenant, user, provider, flow}``, salt
  ``adconnect.oauth.state``) plus the PKCE pair. The verifier is derived from the nonce with
  HMAC-SHA256, so nothing secret is stored.
* :meth:`OAuthStates.consume` checks signature, age, provider and flow, tenant and user, and
  burns the nonce with one atomic ``UPDATE ... RETURNING``; every failure is an
  :class:`~adconnect.errors.OAuthStateError` whose ``code`` says why. A failed check does
  not burn the state.

The payload is signed, not encrypted: it names the tenant, user, provider and flow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr
from sqlalchemy import Connection, delete, func, insert, select, update

from adconnect.db.schema import oauth_states
from adconnect.errors import ConfigurationError, OAuthStateError
from adconnect.models import PROVIDER_ID_PATTERN

if TYPE_CHECKING:
    from adconnect.db.database import Database

__all__ = ["STATE_SALT", "ConsumedState", "IssuedState", "OAuthStates", "pkce_challenge"]

log = logging.getLogger(__name__)

STATE_SALT = "adconnect.oauth.state"
_ID = re.compile(PROVIDER_ID_PATTERN)
_MAX_STATE_LENGTH = 2048

_MESSAGES = {
    "invalid_oauth_state": "the sign-in request is not valid; start the connection again",
    "expired_oauth_state": "the sign-in request has expired; start the connection again",
    "replayed_oauth_state": "the sign-in request was already used; start the connection again",
    "wrong_oauth_flow": "the sign-in request belongs to another provider or flow",
    "oauth_state_mismatch": "the sign-in request was started by another tenant or user",
    "redirect_uri_mismatch": "the callback URL is not the one the sign-in request was made for",
}


@dataclass(frozen=True)
class IssuedState:
    """A fresh state: put ``state`` and ``code_challenge`` in the authorization URL."""

    state: str
    code_verifier: SecretStr
    code_challenge: str
    expires_at: datetime


@dataclass(frozen=True)
class ConsumedState:
    """What a valid, now burnt, state was issued for, with its PKCE verifier."""

    tenant_id: UUID
    user_id: str | None
    provider_id: str
    flow: str
    redirect_uri: str
    code_verifier: SecretStr


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge: base64url(sha256(verifier)) without padding."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _fail(code: str, provider_id: str | None = None) -> OAuthStateError:
    log.warning("OAuth state rejected: %s (provider=%s)", code, provider_id)
    return OAuthStateError(
        _MESSAGES[code],
        code=code,
        provider_id=provider_id,
        hint="start the connection again from the beginning",
    )


def _clock_signer(clock: Callable[[], float]) -> type[TimestampSigner]:
    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return _ClockSigner


class OAuthStates:
    """Issue and consume OAuth states for any tenant.

    :param secret: at least 32 random bytes, the same on every replica.
    :param ttl_seconds: how long a state stays usable.
    :param clock: seconds since the epoch (drives signature age and row expiry alike).
    """

    def __init__(
        self, db: Database, secret: bytes, *, ttl_seconds: int = 600, clock: Callable[[], float] = time.time
    ) -> None:
        if not isinstance(secret, bytes) or len(secret) < 32:
            raise ConfigurationError("the OAuth state secret must be at least 32 random bytes")
        if ttl_seconds <= 0:
            raise ConfigurationError("the OAuth state lifetime must be positive")
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._secret = secret
        self._serializer = URLSafeTimedSerializer(secret, salt=STATE_SALT, signer=_clock_signer(clock))

    def _verifier(self, nonce: str) -> str:
        return _b64(hmac.new(self._secret, b"pkce|" + nonce.encode(), hashlib.sha256).digest())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def issue(
        self,
        *,
        tenant_id: UUID | str,
        provider_id: str,
        flow: str,
        redirect_uri: str,
        allowed_redirect_uris: Iterable[str],
        user_id: str | UUID | None = None,
    ) -> IssuedState:
        """Mint a state for one authorization attempt.

        :raises OAuthStateError: ``redirect_uri_mismatch`` when ``redirect_uri`` is not
            exactly one of ``allowed_redirect_uris``.
        """
        if redirect_uri not in tuple(allowed_redirect_uris):
            raise _fail("redirect_uri_mismatch", provider_id)
        for value in (provider_id, flow):
            if not _ID.match(value):
                raise ValueError(f"{value!r} is not a snake_case provider id or flow name")
        tenant = UUID(str(tenant_id))
        user = None if user_id is None else str(user_id)
        nonce = secrets.token_urlsafe(32)
        expires_at = datetime.fromtimestamp(self.clock() + self.ttl_seconds, UTC)
        with self.db.tenant(tenant) as conn:
            conn.execute(
                insert(oauth_states).values(
                    nonce=nonce,
                    tenant_id=tenant,
                    provider_id=provider_id,
                    flow=flow,
                    user_id=user,
                    redirect_uri=redirect_uri,
                    expires_at=expires_at,
                )
            )
        state = self._serializer.dumps(
            {"nonce": nonce, "tenant": str(tenant), "user": user, "provider": provider_id, "flow": flow}
        )
        verifier = self._verifier(nonce)
        return IssuedState(
            state=state,
            code_verifier=SecretStr(verifier),
            code_challenge=pkce_challenge(verifier),
            expires_at=expires_at,
        )

    def consume(
        self,
        state: str,
        *,
        provider_id: str,
        flow: str,
        redirect_uri: str,
        tenant_id: UUID | str | None = None,
        user_id: str | UUID | None = None,
    ) -> ConsumedState:
        """Check and burn a state coming back on the callback.

        :raises OAuthStateError: with ``code`` ``invalid_oauth_state`` (bad signature or
            unknown), ``expired_oauth_state``, ``wrong_oauth_flow`` (another provider or
            flow), ``oauth_state_mismatch`` (``tenant_id``/``user_id`` given and different),
            ``redirect_uri_mismatch`` or ``replayed_oauth_state``.
        """
        payload = self._load(state, provider_id)
        tenant = UUID(payload["tenant"])
        if payload["provider"] != provider_id or payload["flow"] != flow:
            raise _fail("wrong_oauth_flow", provider_id)
        if tenant_id is not None and UUID(str(tenant_id)) != tenant:
            raise _fail("oauth_state_mismatch", provider_id)
        if user_id is not None and str(user_id) != payload["user"]:
            raise _fail("oauth_state_mismatch", provider_id)
        now = self._now()
        c = oauth_states.c
        with self.db.tenant(tenant) as conn:
            row = conn.execute(
                update(oauth_states)
                .where(
                    c.nonce == payload["nonce"],
                    c.consumed_at.is_(None),
                    c.expires_at > now,
                    c.provider_id == provider_id,
                    c.flow == flow,
                    c.redirect_uri == redirect_uri,
                    c.user_id.is_not_distinct_from(payload["user"]),
                )
                .values(consumed_at=func.now())
                .returning(c.user_id)
            ).first()
            failure = None if row is not None else self._why(conn, payload["nonce"], redirect_uri, now)
        if failure is not None:
            raise _fail(failure, provider_id)
        return ConsumedState(
            tenant_id=tenant,
            user_id=payload["user"],
            provider_id=provider_id,
            flow=flow,
            redirect_uri=redirect_uri,
            code_verifier=SecretStr(self._verifier(payload["nonce"])),
        )

    def purge_expired(self, tenant_id: UUID | str) -> int:
        """Delete the tenant's expired states; returns how many went."""
        with self.db.tenant(tenant_id) as conn:
            result = conn.execute(delete(oauth_states).where(oauth_states.c.expires_at <= self._now()))
        return int(result.rowcount or 0)

    def _load(self, state: str, provider_id: str) -> dict[str, Any]:
        if not isinstance(state, str) or not state or len(state) > _MAX_STATE_LENGTH:
            raise _fail("invalid_oauth_state", provider_id)
        try:
            payload = self._serializer.loads(state, max_age=self.ttl_seconds)
        except SignatureExpired:
            raise _fail("expired_oauth_state", provider_id) from None
        except BadData:
            raise _fail("invalid_oauth_state", provider_id) from None
        valid = (
            isinstance(payload, dict)
            and all(isinstance(payload.get(k), str) for k in ("nonce", "tenant", "provider", "flow"))
            and isinstance(payload.get("user"), str | None)
        )
        if valid:
            try:
                UUID(payload["tenant"])
            except ValueError:
                valid = False
        if not valid:
            raise _fail("invalid_oauth_state", provider_id)
        return dict(payload)

    @staticmethod
    def _why(conn: Connection, nonce: str, redirect_uri: str, now: datetime) -> str:
        c = oauth_states.c
        row = conn.execute(
            select(c.consumed_at, c.expires_at, c.redirect_uri).where(c.nonce == nonce)
        ).first()
        if row is None:
            return "invalid_oauth_state"
        if row.consumed_at is not None:
            return "replayed_oauth_state"
        if row.expires_at <= now:
            return "expired_oauth_state"
        if row.redirect_uri != redirect_uri:
            return "redirect_uri_mismatch"
        return "invalid_oauth_state"
