"""Key rotation for the credential vault, mixed into :class:`~adconnect.vault.Vault`.

Two rotations, both online - readers and writers keep working while they run:

- :meth:`~KeyRotationMixin.rotate_master_key` rewraps every tenant's data keys under the
  keyring's primary master key; :meth:`~KeyRotationMixin.rotate_master_key_file` also adds a new
  primary to the key file first and drops the old keys no data key references afterwards.
- :meth:`~KeyRotationMixin.rotate_tenant_keys` gives each tenant a new data key, re-encrypts
  every credential onto it in batches and deletes the old data keys no row references.

Each returns a :class:`RotationReport`. The encryption itself (sealing, associated data, data
key unwrapping) stays in :mod:`adconnect.vault`, which builds ``Vault`` on this mixin.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.errors import ForeignKeyViolation
from sqlalchemy import Connection, delete, func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from adconnect.db.database import Database
from adconnect.db.schema import credentials, tenant_keys, tenants
from adconnect.errors import ConfigurationError, NotFoundError
from adconnect.keyring import MasterKeyring, generate_key, write_key_file
from adconnect.settings import FrameworkSettings

__all__ = ["KeyRotationMixin", "RotationReport"]

log = logging.getLogger("adconnect.vault")  # the vault's logger, as before the split

_ROTATION_LOCK = 0x0ADC0DE2  # advisory lock class: one tenant-key rotation per tenant
_C, _K = credentials.c, tenant_keys.c


@dataclass(frozen=True)
class RotationReport:
    """What a rotation did. Ids are master key ids (hashes), never key material."""

    kind: str
    tenants: int = 0
    deks_rewrapped: int = 0
    credentials_reencrypted: int = 0
    credentials_failed: int = 0
    keys_retired: int = 0
    keys_in_use: int = 0
    unused_master_key_ids: tuple[str, ...] = ()
    dropped_master_key_ids: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for the CLI and the logs."""
        if self.kind == "tenant_keys":
            text_ = (
                f"tenant key rotation: {self.tenants} tenant(s), "
                f"{self.credentials_reencrypted} credential(s) re-encrypted, "
                f"{self.keys_retired} old key(s) deleted, "
                f"{self.keys_in_use} still in use (run again)"
            )
            if self.credentials_failed:
                text_ += f", {self.credentials_failed} credential(s) undecryptable"
            return text_
        text_ = f"master key rotation: {self.tenants} tenant(s), {self.deks_rewrapped} data key(s) rewrapped"
        if self.unused_master_key_ids:
            text_ += f"; unused master keys: {', '.join(self.unused_master_key_ids)}"
        if self.dropped_master_key_ids:
            text_ += f"; dropped from the key file: {', '.join(self.dropped_master_key_ids)}"
        return text_


class KeyRotationMixin:
    """The rotation methods of :class:`~adconnect.vault.Vault`; not usable on its own.

    They use the vault's data-key and decryption methods, declared below for the type checker.
    The sealing helpers of :mod:`adconnect.vault` are imported when a rotation runs, because
    that module imports this one to build ``Vault``.
    """

    if TYPE_CHECKING:
        db: Database
        keyring: MasterKeyring
        _deks: dict[tuple[UUID, int], bytes]
        _lock: threading.Lock

        def __init__(self, db: Database, keyring: MasterKeyring) -> None: ...

        def _unwrap(
            self, tenant_id: UUID, version: int, master_key_id: str, wrapped: bytes, *, cached: bool = True
        ) -> bytes: ...

        def _insert_dek(self, conn: Connection, tenant_id: UUID, version: int) -> None: ...

        def _dek(self, conn: Connection, tenant_id: UUID, version: int) -> bytes: ...

        def _open(self, tenant_id: UUID, row: Any) -> str: ...

    def _tenant_ids(self, tenant_id: UUID | str | None = None) -> list[UUID]:
        from adconnect.vault import _uuid

        with self.db.platform() as conn:
            query = select(tenants.c.id).order_by(tenants.c.id)
            if tenant_id is not None:
                query = query.where(tenants.c.id == _uuid(tenant_id))
            ids = list(conn.execute(query).scalars())
        if tenant_id is not None and not ids:
            raise NotFoundError(f"tenant {tenant_id} does not exist")
        return ids

    def rotate_master_key(self) -> RotationReport:
        """Rewrap every tenant's data keys under the keyring's primary key.

        One transaction per tenant; credentials are untouched and stay readable throughout.
        The report lists the keyring ids no data key references any more.
        """
        from adconnect.vault import _dek_aad, _seal

        self.keyring = self.keyring.refreshed()
        primary, referenced, count, rewrapped = self.keyring.primary, set(), 0, 0
        for tid in self._tenant_ids():
            with self.db.tenant(tid) as conn:
                rows = conn.execute(
                    select(_K.version, _K.master_key_id, _K.wrapped_key)
                    .where(_K.tenant_id == tid)
                    .with_for_update(key_share=True)
                )
                for row in rows.all():
                    if row.master_key_id != primary.key_id:
                        dek = self._unwrap(tid, row.version, row.master_key_id, row.wrapped_key, cached=False)
                        nonce, sealed = _seal(primary.material, dek, _dek_aad(tid, row.version))
                        conn.execute(
                            update(tenant_keys)
                            .where(_K.tenant_id == tid, _K.version == row.version)
                            .values(master_key_id=primary.key_id, wrapped_key=nonce + sealed)
                        )
                        rewrapped += 1
                    referenced.add(primary.key_id)  # whether rewrapped now or before
            count += 1
        report = RotationReport(
            "master_key",
            tenants=count,
            deks_rewrapped=rewrapped,
            unused_master_key_ids=tuple(i for i in self.keyring.ids if i not in referenced),
        )
        log.info("%s", report.summary())
        return report

    def rotate_tenant_keys(
        self, tenant_id: UUID | str | None = None, *, batch_size: int = 100
    ) -> RotationReport:
        """Give each tenant (or one) a new data key and move every credential onto it.

        Per tenant: insert a new active DEK and mark older ones ``retiring``; re-encrypt the
        rows still on older versions, ``batch_size`` rows per transaction; then delete the
        retiring DEKs no row references. A DEK a concurrent writer still uses is kept and
        counted in ``keys_in_use``: the next run deletes it.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        totals = dict.fromkeys(
            ("credentials_reencrypted", "credentials_failed", "keys_retired", "keys_in_use"), 0
        )
        ids = self._tenant_ids(tenant_id)
        for tid in ids:
            for name, value in self._rotate_one_tenant(tid, batch_size).items():
                totals[name] += value
        report = RotationReport(
            "tenant_keys",
            tenants=len(ids),
            credentials_reencrypted=totals["credentials_reencrypted"],
            credentials_failed=totals["credentials_failed"],
            keys_retired=totals["keys_retired"],
            keys_in_use=totals["keys_in_use"],
        )
        log.info("%s", report.summary())
        return report

    def _rotate_one_tenant(self, tid: UUID, batch_size: int) -> dict[str, int]:
        from adconnect.vault import _JOINED, _ROW_COLUMNS, CredentialDecryptError, _aad, _seal

        counts = dict.fromkeys(
            ("credentials_reencrypted", "credentials_failed", "keys_retired", "keys_in_use"), 0
        )
        with self.db.tenant(tid) as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:k, hashtext(:t))"), {"k": _ROTATION_LOCK, "t": str(tid)}
            )
            latest = conn.execute(select(func.max(_K.version)).where(_K.tenant_id == tid)).scalar_one()
            if latest is None:
                return counts  # no data key yet: nothing to rotate
            new = latest + 1
            self._insert_dek(conn, tid, new)
            conn.execute(
                update(tenant_keys).where(_K.tenant_id == tid, _K.version < new).values(state="retiring")
            )
        after: tuple[UUID, str] | None = None
        while True:
            with self.db.tenant(tid) as conn:
                dek = self._dek(conn, tid, new)
                query = (
                    select(*_ROW_COLUMNS)
                    .select_from(_JOINED)
                    .where(_C.tenant_id == tid, _C.key_version < new)
                )
                if after is not None:
                    query = query.where(tuple_(_C.connection_id, _C.field) > tuple_(*after))
                rows = conn.execute(
                    query.order_by(_C.connection_id, _C.field)
                    .limit(batch_size)
                    .with_for_update(of=credentials)
                ).all()
                for row in rows:
                    try:
                        plain = self._open(tid, row)
                    except CredentialDecryptError as exc:
                        log.warning("tenant key rotation skipped a credential: %s", exc)
                        counts["credentials_failed"] += 1
                        continue
                    nonce, sealed = _seal(dek, plain.encode("utf-8"), _aad(tid, row.connection_id, row.field))
                    conn.execute(
                        update(credentials)
                        .where(_C.connection_id == row.connection_id, _C.field == row.field)
                        .values(key_version=new, nonce=nonce, ciphertext=sealed)
                    )
                    counts["credentials_reencrypted"] += 1
            if not rows:
                break
            after = (rows[-1].connection_id, rows[-1].field)
        with self.db.tenant(tid) as conn:
            for version in (
                conn.execute(select(_K.version).where(_K.tenant_id == tid, _K.state == "retiring"))
                .scalars()
                .all()
            ):
                try:
                    with conn.begin_nested():
                        conn.execute(delete(tenant_keys).where(_K.tenant_id == tid, _K.version == version))
                except IntegrityError as exc:
                    if not isinstance(exc.orig, ForeignKeyViolation):
                        raise
                    counts["keys_in_use"] += 1
                    continue
                counts["keys_retired"] += 1
                with self._lock:
                    self._deks.pop((tid, version), None)
        return counts

    @classmethod
    def rotate_master_key_file(cls, db: Database, settings: FrameworkSettings) -> RotationReport:
        """Rotate the master key of the key file: add a new primary, rewrap, drop old keys.

        The file is rewritten atomically (mode 0600) twice: first with a new key ahead of the
        old ones, then, once every data key is rewrapped, without the old keys that no data
        key references. Back up the old file first if database backups still need it.

        :param db: the database whose data keys are rewrapped.
        :param settings: names the key file (``master_key_file``).
        :raises ConfigurationError: the keys come from ``ADCONNECT_MASTER_KEY``.
        """
        if settings.master_key is not None:
            raise ConfigurationError(
                "the master keys come from ADCONNECT_MASTER_KEY, not from a key file",
                hint="put a new key first in ADCONNECT_MASTER_KEY (comma-separated, newest "
                "first), restart every process, run the rewrap (master key rotation), then "
                "remove the keys the report lists as unused",
            )
        path = settings.master_key_file
        current = MasterKeyring.from_file(path, create=True)
        write_key_file(path, [generate_key(), *(k.material for k in current)])
        vault = cls(db, MasterKeyring.from_file(path))
        report = vault.rotate_master_key()
        primary = vault.keyring.primary.key_id
        dropped = tuple(i for i in report.unused_master_key_ids if i != primary)
        write_key_file(path, [k.material for k in vault.keyring if k.key_id not in dropped])
        still_unused = tuple(i for i in report.unused_master_key_ids if i not in dropped)
        return dataclasses.replace(report, dropped_master_key_ids=dropped, unused_master_key_ids=still_unused)
