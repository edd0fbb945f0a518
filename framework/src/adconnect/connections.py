"""Tenant connections: the OAuth connect flow, credentials in the vault, status.

:class:`ConnectionService` is the one place that ties the OAuth core (signed single-use
state, PKCE), a provider's OAuth hooks, credential validation and the vault together. The
CLI and the reporting API both use it; providers never see states, verifiers or the vault.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import SecretStr
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from adconnect.db.database import Database
from adconnect.db.schema import connections, provider_enablements
from adconnect.errors import ConfigurationError, NotFoundError, ReauthRequiredError
from adconnect.keyring import MasterKeyring
from adconnect.models import (
    AuthorizationRequest,
    CodeExchange,
    ConnectionRef,
    CredentialReport,
    CredentialStatus,
    TokenSet,
)
from adconnect.oauth_states import OAuthStates
from adconnect.plugins import PluginHost
from adconnect.redaction import redact
from adconnect.vault import Vault

__all__ = [
    "AuthorizationStart",
    "ConnectResult",
    "ConnectionRecord",
    "ConnectionService",
    "mark_needs_reauth",
    "state_secret",
]

log = logging.getLogger(__name__)


def state_secret(keyring: MasterKeyring) -> bytes:
    """The OAuth-state signing key, derived from the primary master key (same on every replica)."""
    return hmac.new(keyring.primary.material, b"adconnect:oauth-state:v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class ConnectionRecord:
    id: UUID
    tenant_id: UUID
    provider_id: str
    name: str
    external_account_id: str | None
    status: str
    status_reason: str | None
    credential_status: str | None
    granted_scopes: tuple[str, ...]
    token_expires_at: datetime | None
    options: dict[str, Any]

    def ref(self) -> ConnectionRef:
        return ConnectionRef(
            connection_id=self.id,
            tenant_id=self.tenant_id,
            provider_id=self.provider_id,
            external_account_id=self.external_account_id,
            options=self.options,
        )


@dataclass(frozen=True)
class AuthorizationStart:
    """Where to send the user, and the state to expect back."""

    url: str
    state: str
    redirect_uri: str
    scopes: tuple[str, ...]
    ignored_scopes: tuple[str, ...]
    expires_at: datetime


@dataclass(frozen=True)
class ConnectResult:
    connection: ConnectionRecord
    report: CredentialReport


def mark_needs_reauth(conn: SqlConnection, connection_id: UUID, reason: str) -> None:
    """The credential is dead: stop the connection's schedules until someone reconnects.

    Runs inside the caller's tenant transaction; data, state and the stored credential stay.
    """
    conn.execute(
        update(connections)
        .where(connections.c.id == connection_id)
        .values(
            status="needs_reauth",
            status_reason=redact(reason)[:2000],
            credential_status="reauth_required",
            updated_at=func.now(),
        )
    )


def _record(row: Any) -> ConnectionRecord:
    return ConnectionRecord(
        row.id,
        row.tenant_id,
        row.provider_id,
        row.name,
        row.external_account_id,
        row.status,
        row.status_reason,
        row.credential_status,
        tuple(row.granted_scopes),
        row.token_expires_at,
        dict(row.options),
    )


class ConnectionService:
    """Connect tenants to providers and keep their credentials."""

    def __init__(self, db: Database, host: PluginHost, vault: Vault, states: OAuthStates) -> None:
        self.db = db
        self.host = host
        self.vault = vault
        self.states = states

    @classmethod
    def create(cls, db: Database, host: PluginHost, keyring: MasterKeyring) -> ConnectionService:
        return cls(db, host, Vault(db, keyring), OAuthStates(db, state_secret(keyring)))

    # --- records ---------------------------------------------------------------------------

    def ensure(self, conn: SqlConnection, tenant_id: UUID, provider_id: str, name: str) -> ConnectionRecord:
        row = conn.execute(
            insert(connections)
            .values(tenant_id=tenant_id, provider_id=provider_id, name=name)
            .on_conflict_do_update(
                index_elements=["tenant_id", "provider_id", "name"], set_={"updated_at": func.now()}
            )
            .returning(*connections.c)
        ).one()
        return _record(row)

    def get(self, tenant_id: UUID, connection_id: UUID) -> ConnectionRecord:
        with self.db.tenant(tenant_id) as conn:
            row = conn.execute(select(connections).where(connections.c.id == connection_id)).first()
        if row is None:
            raise NotFoundError(f"no connection {connection_id} for this tenant")
        return _record(row)

    def list(self, tenant_id: UUID, provider_id: str | None = None) -> list[ConnectionRecord]:
        query = select(connections).order_by(connections.c.provider_id, connections.c.name)
        if provider_id is not None:
            query = query.where(connections.c.provider_id == provider_id)
        with self.db.tenant(tenant_id) as conn:
            return [_record(r) for r in conn.execute(query).all()]

    def token(self, tenant_id: UUID, connection_id: UUID) -> TokenSet | None:
        with self.db.tenant(tenant_id) as conn:
            return self.vault.load_token_set(conn, tenant_id=tenant_id, connection_id=connection_id)

    def provider_enabled(self, tenant_id: UUID, provider_id: str) -> bool:
        with self.db.tenant(tenant_id) as conn:
            row = conn.execute(
                select(provider_enablements.c.enabled).where(
                    provider_enablements.c.provider_id == provider_id
                )
            ).first()
        return bool(row and row.enabled)

    def fresh_token(
        self, record: ConnectionRecord, *, within: timedelta = timedelta(minutes=5)
    ) -> TokenSet | None:
        """The connection's token, refreshed first when it expires within ``within``.

        A refresh the provider refuses for good marks the connection ``needs_reauth``.
        """
        token = self.token(record.tenant_id, record.id)
        if token is None or not token.expires_within(within, now=datetime.now(UTC)):
            return token
        try:
            refreshed = self.host.refresh_token(record.provider_id, token)
        except ReauthRequiredError as exc:
            with self.db.tenant(record.tenant_id) as conn:
                mark_needs_reauth(conn, record.id, exc.user_message)
            raise
        if refreshed is None:
            return token
        with self.db.tenant(record.tenant_id) as conn:
            self.vault.save_token_set(
                conn, tenant_id=record.tenant_id, connection_id=record.id, token=refreshed
            )
            conn.execute(
                update(connections)
                .where(connections.c.id == record.id)
                .values(token_expires_at=refreshed.expires_at, updated_at=func.now())
            )
        return refreshed

    # --- the connect flow ------------------------------------------------------------------

    def start_authorization(
        self,
        tenant_id: UUID,
        provider_id: str,
        *,
        redirect_uri: str,
        flow: str = "default",
        user_id: str | None = None,
        scopes: tuple[str, ...] | None = None,
        options: dict[str, str] | None = None,
    ) -> AuthorizationStart:
        """Mint a state and build the provider's authorization URL."""
        provider = self.host.provider(provider_id)
        allowed = provider.allowed_redirect_uris()  # type: ignore[attr-defined]
        issued = self.states.issue(
            tenant_id=tenant_id,
            provider_id=provider_id,
            flow=flow,
            redirect_uri=redirect_uri,
            allowed_redirect_uris=allowed,
            user_id=user_id,
        )
        built = self.host.build_authorization_url(
            provider_id,
            AuthorizationRequest(
                state=issued.state,
                redirect_uri=redirect_uri,
                code_challenge=issued.code_challenge,
                flow=flow,
                scopes=scopes,
                options=options or {},
            ),
        )
        return AuthorizationStart(
            built.url, issued.state, redirect_uri, built.scopes, built.ignored_scopes, issued.expires_at
        )

    def complete_authorization(
        self,
        *,
        provider_id: str,
        state: str,
        code: str,
        redirect_uri: str,
        flow: str = "default",
        tenant_id: UUID | None = None,
        user_id: str | None = None,
        connection_name: str = "default",
    ) -> ConnectResult:
        """Verify and burn the state, exchange the code, validate and store the credential.

        A credential missing required scopes is stored (so a re-request can reuse the
        connection) but the connection is marked ``needs_reauth`` with the missing scopes.
        """
        consumed = self.states.consume(
            state,
            provider_id=provider_id,
            flow=flow,
            redirect_uri=redirect_uri,
            tenant_id=tenant_id,
            user_id=user_id,
        )
        token = self.host.exchange_code(
            provider_id,
            CodeExchange(
                code=SecretStr(code),
                redirect_uri=redirect_uri,
                code_verifier=consumed.code_verifier,
                flow=flow,
            ),
        )
        report = self.host.validate_credential(provider_id, token, flow)
        with self.db.tenant(consumed.tenant_id) as conn:
            record = self.ensure(conn, consumed.tenant_id, provider_id, connection_name)
            self.vault.save_token_set(
                conn, tenant_id=consumed.tenant_id, connection_id=record.id, token=token
            )
            record = self._apply_report(conn, record.id, report, token)
        log.info(
            "tenant %s connected %s (%s): %s", consumed.tenant_id, provider_id, connection_name, record.status
        )
        return ConnectResult(record, report)

    def _apply_report(
        self, conn: SqlConnection, connection_id: UUID, report: CredentialReport, token: TokenSet
    ) -> ConnectionRecord:
        reason: str | None
        if report.missing_scopes:
            status, reason = (
                "needs_reauth",
                ("missing required permissions: " + ", ".join(report.missing_scopes)),
            )
            credential = CredentialStatus.REAUTH_REQUIRED.value
        elif report.status in (CredentialStatus.INVALID, CredentialStatus.REAUTH_REQUIRED):
            status, reason, credential = "needs_reauth", report.reason, report.status.value
        else:
            status, reason, credential = "active", None, report.status.value
        row = conn.execute(
            update(connections)
            .where(connections.c.id == connection_id)
            .values(
                status=status,
                status_reason=reason,
                credential_status=credential,
                identity=report.identity,
                granted_scopes=sorted(report.granted_scopes),
                declined_scopes=sorted(report.declined_scopes),
                token_expires_at=report.expires_at or token.expires_at,
                last_validated_at=datetime.now(UTC),
                updated_at=func.now(),
            )
            .returning(*connections.c)
        ).one()
        return _record(row)

    def select_account(
        self, tenant_id: UUID, connection_id: UUID, external_account_id: str
    ) -> ConnectionRecord:
        """Choose which discovered asset (ad account, page, customer) the connection syncs."""
        if not external_account_id.strip():
            raise ConfigurationError("an account id is required")
        with self.db.tenant(tenant_id) as conn:
            row = conn.execute(
                update(connections)
                .where(connections.c.id == connection_id)
                .values(external_account_id=external_account_id, updated_at=func.now())
                .returning(*connections.c)
            ).first()
        if row is None:
            raise NotFoundError(f"no connection {connection_id} for this tenant")
        return _record(row)

    def set_lookback(self, tenant_id: UUID, connection_id: UUID, days: int | None) -> ConnectionRecord:
        """Override how many days every stream re-reads (None: back to the streams' defaults).

        Refused above the smallest ``max_lookback`` of the provider's streams.
        """
        record = self.get(tenant_id, connection_id)
        options = dict(record.options)
        if days is None:
            options.pop("lookback_days", None)
        else:
            if days < 0:
                raise ConfigurationError("the lookback cannot be negative")
            limits = [s.max_lookback for s in self.host.streams(record.provider_id) if s.max_lookback]
            if limits and timedelta(days=days) > min(limits):
                raise ConfigurationError(
                    f"{record.provider_id} allows at most {min(limits).days} days of lookback",
                    hint="ask for fewer days; the provider declares its maximum per stream",
                )
            options["lookback_days"] = days
        with self.db.tenant(tenant_id) as conn:
            row = conn.execute(
                update(connections)
                .where(connections.c.id == connection_id)
                .values(options=options, updated_at=func.now())
                .returning(*connections.c)
            ).one()
        return _record(row)

    def disconnect(self, tenant_id: UUID, connection_id: UUID) -> int:
        """Revoke the token at the provider (best effort) and delete the stored credentials."""
        record = self.get(tenant_id, connection_id)
        token = self.token(tenant_id, connection_id)
        if token is not None:
            try:
                self.host.revoke_token(record.provider_id, token)
            except Exception as exc:  # revocation is best effort; local deletion is not
                log.warning("revoking %s token failed: %s", record.provider_id, type(exc).__name__)
        with self.db.tenant(tenant_id) as conn:
            deleted = self.vault.delete_secrets(conn, tenant_id=tenant_id, connection_id=connection_id)
            conn.execute(
                update(connections)
                .where(connections.c.id == connection_id)
                .values(
                    status="disconnected",
                    status_reason="disconnected by operator",
                    credential_status=None,
                    updated_at=func.now(),
                )
            )
        return deleted
