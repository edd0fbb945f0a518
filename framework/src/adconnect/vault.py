"""The credential vault: per-tenant data keys, row-bound AES-256-GCM secrets.

Envelope encryption. Each tenant has data keys (DEKs, table ``tenant_keys``), each wrapped by
a master key of the :class:`~adconnect.keyring.MasterKeyring` with associated data
``adconnect:dek:v1|tenant=<uuid>|version=<n>``. Each secret is one ``credentials`` row
encrypted with the tenant's newest active DEK and associated data
``adconnect:v1|tenant=<uuid>|connection=<uuid>|field=<name>``: a ciphertext moved to another
tenant's, connection's or field's row does not decrypt (:class:`CredentialDecryptError`).

Rows name the DEK version that encrypted them, so readers keep working while
:meth:`Vault.rotate_master_key` rewraps DEKs or :meth:`Vault.rotate_tenant_keys` moves rows
to a new DEK. The rotation code lives in :mod:`adconnect.vault_rotation`: :class:`Vault`
inherits it from :class:`~adconnect.vault_rotation.KeyRotationMixin`, and
:class:`RotationReport` is re-exported here. Every secret that passes through the vault is
registered with :mod:`adconnect.redaction`; no message raised here contains secret material.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from adconnect import redaction
from adconnect.db.database import Database
from adconnect.db.schema import credentials, tenant_keys
from adconnect.errors import ConfigurationError
from adconnect.keyring import MasterKey, MasterKeyring
from adconnect.models import TokenSet
from adconnect.vault_rotation import KeyRotationMixin, RotationReport

__all__ = ["CredentialDecryptError", "RotationReport", "Vault"]

NONCE_BYTES = 12
ACCESS_TOKEN, REFRESH_TOKEN, TOKEN_META = "access_token", "refresh_token", "token_meta"
_META_FIELDS = ("token_type", "expires_at", "scopes", "identity", "metadata")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_C, _K = credentials.c, tenant_keys.c


class CredentialDecryptError(ConfigurationError):
    """A stored credential does not decrypt: altered, or copied from another row."""

    code = "credential_undecryptable"

    def __init__(self, *, tenant_id: UUID, connection_id: UUID, field: str) -> None:
        super().__init__(
            f"the stored credential {field!r} of connection {connection_id} (tenant {tenant_id}) "
            "cannot be decrypted: it was altered or does not belong to this row",
            hint="reconnect the connection to store a new credential",
        )
        self.tenant_id, self.connection_id, self.field = tenant_id, connection_id, field


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _dek_aad(tenant_id: UUID, version: int) -> bytes:
    return f"adconnect:dek:v1|tenant={tenant_id}|version={version}".encode()


def _aad(tenant_id: UUID, connection_id: UUID, field: str) -> bytes:
    return f"adconnect:v1|tenant={tenant_id}|connection={connection_id}|field={field}".encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def _checked(field: str) -> str:
    if not _FIELD.match(field):
        raise ValueError(f"credential field {field!r} must be snake_case, <= 63 chars")
    return field


_ROW_COLUMNS = (
    _C.connection_id,
    _C.field,
    _C.key_version,
    _C.nonce,
    _C.ciphertext,
    _K.master_key_id,
    _K.wrapped_key,
)
_JOINED = credentials.join(tenant_keys, (_K.tenant_id == _C.tenant_id) & (_K.version == _C.key_version))


class Vault(KeyRotationMixin):
    """Encrypts, stores, decrypts and rotates tenant credentials.

    Methods that read or write one tenant take an open connection from
    ``db.tenant(tenant_id)``: the caller owns the transaction. Unwrapped data keys are
    cached per ``(tenant, version)`` for the life of the vault. The rotation methods come from
    :class:`~adconnect.vault_rotation.KeyRotationMixin`.

    :param db: the database (the app role, under row-level security).
    :param keyring: the master keys; the primary wraps new data keys.
    """

    def __init__(self, db: Database, keyring: MasterKeyring) -> None:
        self.db = db
        self.keyring = keyring
        self._deks: dict[tuple[UUID, int], bytes] = {}
        self._lock = threading.Lock()

    # --- data keys -------------------------------------------------------------------------

    def _master(self, master_key_id: str) -> MasterKey:
        key = self.keyring.get(master_key_id)
        if key is None:  # perhaps another process rotated the key file
            self.keyring = self.keyring.refreshed()
            key = self.keyring.get(master_key_id)
        if key is None:
            raise ConfigurationError(
                f"a data key is wrapped by master key {master_key_id}, which is not in the "
                f"keyring (ids {', '.join(self.keyring.ids)})",
                code="master_key_missing",
                hint="add that key back to ADCONNECT_MASTER_KEY or the key file",
            )
        return key

    def _unwrap(
        self, tenant_id: UUID, version: int, master_key_id: str, wrapped: bytes, *, cached: bool = True
    ) -> bytes:
        if cached and (dek := self._deks.get((tenant_id, version))) is not None:
            return dek
        master = self._master(master_key_id)
        wrapped = bytes(wrapped)
        try:
            dek = AESGCM(master.material).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _dek_aad(tenant_id, version)
            )
        except (InvalidTag, ValueError):
            raise ConfigurationError(
                f"data key version {version} of tenant {tenant_id} does not unwrap with master "
                f"key {master_key_id}",
                code="data_key_undecryptable",
                hint="the tenant_keys row was altered or restored from another database",
            ) from None
        with self._lock:
            self._deks[(tenant_id, version)] = dek
        return dek

    def _insert_dek(self, conn: Connection, tenant_id: UUID, version: int) -> None:
        self.keyring = self.keyring.refreshed()
        master, dek = self.keyring.primary, AESGCM.generate_key(bit_length=256)
        nonce, sealed = _seal(master.material, dek, _dek_aad(tenant_id, version))
        conn.execute(
            insert(tenant_keys)
            .values(
                tenant_id=tenant_id,
                version=version,
                master_key_id=master.key_id,
                wrapped_key=nonce + sealed,
                state="active",
            )
            .on_conflict_do_nothing()
        )

    def _active_dek(self, conn: Connection, tenant_id: UUID) -> tuple[int, bytes]:
        """The newest active DEK, created if missing; its row is locked FOR KEY SHARE so a
        concurrent rotation cannot delete it before this transaction's rows reference it."""
        query = (
            select(_K.version, _K.master_key_id, _K.wrapped_key)
            .where(_K.tenant_id == tenant_id, _K.state == "active")
            .order_by(_K.version.desc())
            .limit(1)
            .with_for_update(read=True, key_share=True)
        )
        row = conn.execute(query).first()
        if row is None:
            latest = conn.execute(select(func.max(_K.version)).where(_K.tenant_id == tenant_id)).scalar_one()
            self._insert_dek(conn, tenant_id, (latest or 0) + 1)  # loser of a race: no-op
            row = conn.execute(query).one()
        return row.version, self._unwrap(tenant_id, row.version, row.master_key_id, row.wrapped_key)

    def _dek(self, conn: Connection, tenant_id: UUID, version: int) -> bytes:
        """DEK ``version``, its row locked FOR KEY SHARE (see :meth:`_active_dek`)."""
        row = conn.execute(
            select(_K.master_key_id, _K.wrapped_key)
            .where(_K.tenant_id == tenant_id, _K.version == version)
            .with_for_update(read=True, key_share=True)
        ).one()
        return self._unwrap(tenant_id, version, row.master_key_id, row.wrapped_key)

    # --- secrets ---------------------------------------------------------------------------

    def _open(self, tenant_id: UUID, row: Any) -> str:  # a row of _ROW_COLUMNS
        dek = self._unwrap(tenant_id, row.key_version, row.master_key_id, row.wrapped_key)
        try:
            return (
                AESGCM(dek)
                .decrypt(
                    bytes(row.nonce), bytes(row.ciphertext), _aad(tenant_id, row.connection_id, row.field)
                )
                .decode("utf-8")
            )
        except (InvalidTag, ValueError):
            raise CredentialDecryptError(
                tenant_id=tenant_id, connection_id=row.connection_id, field=row.field
            ) from None

    def _read(
        self, conn: Connection, tenant_id: UUID, connection_id: UUID, fields: tuple[str, ...]
    ) -> dict[str, str]:
        rows = conn.execute(
            select(*_ROW_COLUMNS)
            .select_from(_JOINED)
            .where(_C.tenant_id == tenant_id, _C.connection_id == connection_id, _C.field.in_(fields))
        )
        return {row.field: self._open(tenant_id, row) for row in rows}

    def put_secret(
        self,
        conn: Connection,
        *,
        tenant_id: UUID | str,
        connection_id: UUID | str,
        field: str,
        value: str | SecretStr,
    ) -> None:
        """Encrypt ``value`` and store it as ``field`` of the connection (insert or replace).

        :param conn: a transaction from ``db.tenant(tenant_id)``.
        """
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        redaction.register_secret(plain)
        self._write(conn, _uuid(tenant_id), _uuid(connection_id), _checked(field), plain)

    def _write(self, conn: Connection, tenant_id: UUID, connection_id: UUID, field: str, plain: str) -> None:
        version, dek = self._active_dek(conn, tenant_id)
        nonce, sealed = _seal(dek, plain.encode("utf-8"), _aad(tenant_id, connection_id, field))
        stmt = insert(credentials).values(
            tenant_id=tenant_id,
            connection_id=connection_id,
            field=field,
            key_version=version,
            nonce=nonce,
            ciphertext=sealed,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[_C.connection_id, _C.field],
                set_={"key_version": version, "nonce": nonce, "ciphertext": sealed, "updated_at": func.now()},
            )
        )

    def get_secret(
        self, conn: Connection, *, tenant_id: UUID | str, connection_id: UUID | str, field: str
    ) -> SecretStr | None:
        """Decrypt ``field`` of the connection; ``None`` when it is not stored.

        :raises CredentialDecryptError: the stored ciphertext does not belong to this row.
        """
        found = self._read(conn, _uuid(tenant_id), _uuid(connection_id), (_checked(field),))
        if field not in found:
            return None
        redaction.register_secret(found[field])
        return SecretStr(found[field])

    def delete_secret(
        self, conn: Connection, *, tenant_id: UUID | str, connection_id: UUID | str, field: str
    ) -> bool:
        """Delete one field of the connection; ``True`` when it existed."""
        result = conn.execute(
            delete(credentials).where(
                _C.tenant_id == _uuid(tenant_id),
                _C.connection_id == _uuid(connection_id),
                _C.field == _checked(field),
            )
        )
        return result.rowcount > 0

    def delete_secrets(self, conn: Connection, *, tenant_id: UUID | str, connection_id: UUID | str) -> int:
        """Delete every stored field of the connection; returns how many rows went."""
        result = conn.execute(
            delete(credentials).where(
                _C.tenant_id == _uuid(tenant_id), _C.connection_id == _uuid(connection_id)
            )
        )
        return result.rowcount

    def save_token_set(
        self, conn: Connection, *, tenant_id: UUID | str, connection_id: UUID | str, token: TokenSet
    ) -> None:
        """Store a token set: ``access_token``, ``refresh_token`` (or delete a stale one) and
        ``token_meta`` (encrypted JSON of the non-secret fields)."""
        tid, cid = _uuid(tenant_id), _uuid(connection_id)
        self.put_secret(conn, tenant_id=tid, connection_id=cid, field=ACCESS_TOKEN, value=token.access_token)
        if token.refresh_token is not None:
            self.put_secret(
                conn, tenant_id=tid, connection_id=cid, field=REFRESH_TOKEN, value=token.refresh_token
            )
        else:
            self.delete_secret(conn, tenant_id=tid, connection_id=cid, field=REFRESH_TOKEN)
        meta = token.model_dump(mode="json", include=set(_META_FIELDS))
        meta["scopes"] = sorted(token.scopes)
        self._write(conn, tid, cid, TOKEN_META, json.dumps(meta, sort_keys=True))

    def load_token_set(
        self, conn: Connection, *, tenant_id: UUID | str, connection_id: UUID | str
    ) -> TokenSet | None:
        """The stored token set of the connection; ``None`` without an access token."""
        found = self._read(
            conn, _uuid(tenant_id), _uuid(connection_id), (ACCESS_TOKEN, REFRESH_TOKEN, TOKEN_META)
        )
        if ACCESS_TOKEN not in found:
            return None
        for name in (ACCESS_TOKEN, REFRESH_TOKEN):
            if name in found:
                redaction.register_secret(found[name])
        meta = json.loads(found.get(TOKEN_META, "{}"))
        extras = {k: v for k, v in meta.items() if k in _META_FIELDS and v is not None}
        return TokenSet(
            access_token=SecretStr(found[ACCESS_TOKEN]),
            refresh_token=(SecretStr(found[REFRESH_TOKEN]) if REFRESH_TOKEN in found else None),
            **extras,
        )
