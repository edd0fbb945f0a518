"""The credential vault against a real PostgreSQL: round trips, row binding, tampering,
row-level security, key rotation under load, nonce uniqueness and secret leakage."""

from __future__ import annotations

import itertools
import logging
import secrets
import stat
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from adconnect.db.schema import connections, credentials, tenant_keys, tenants
from adconnect.errors import ConfigurationError, NotFoundError
from adconnect.keyring import MasterKeyring, generate_key, key_id
from adconnect.models import TokenSet
from adconnect.redaction import install_log_redaction, uninstall_log_redaction
from adconnect.vault import CredentialDecryptError, RotationReport, Vault

FIELDS = ("access_token", "refresh_token")


def canary() -> str:
    return f"canary-{secrets.token_urlsafe(24)}"


def make_tenant(db, slug: str | None = None) -> uuid.UUID:
    slug = slug or f"t-{secrets.token_hex(4)}"
    with db.platform() as conn:
        return conn.execute(
            insert(tenants).values(slug=slug, name=slug.upper()).returning(tenants.c.id)
        ).scalar_one()


def make_connection(db, tenant_id: uuid.UUID, name: str | None = None) -> uuid.UUID:
    with db.tenant(tenant_id) as conn:
        return conn.execute(
            insert(connections)
            .values(tenant_id=tenant_id, provider_id="toy_ads", name=name or secrets.token_hex(4))
            .returning(connections.c.id)
        ).scalar_one()


def populate(db, vault: Vault, *, tenant_count=2, connection_count=2, fields=FIELDS):
    """Store one secret per (tenant, connection, field); returns {(t, c, f): value}."""
    stored = {}
    for _ in range(tenant_count):
        tid = make_tenant(db)
        for _ in range(connection_count):
            cid = make_connection(db, tid)
            with db.tenant(tid) as conn:
                for field in fields:
                    stored[(tid, cid, field)] = value = canary()
                    vault.put_secret(conn, tenant_id=tid, connection_id=cid, field=field, value=value)
    return stored


def read_all(db, vault: Vault, stored) -> dict:
    found = {}
    for tid, cid, field in stored:
        with db.tenant(tid) as conn:
            got = vault.get_secret(conn, tenant_id=tid, connection_id=cid, field=field)
        found[(tid, cid, field)] = got.get_secret_value() if got is not None else None
    return found


def admin_rows(db, table, *where):
    with db.admin() as conn:
        return conn.execute(select(table).where(*where)).all()


@pytest.fixture
def keyring(adconnect_settings) -> MasterKeyring:
    return MasterKeyring.from_settings(adconnect_settings)


@pytest.fixture
def vault(adconnect_db, keyring) -> Vault:
    return Vault(adconnect_db, keyring)


@pytest.fixture
def log_redaction():
    install_log_redaction()
    yield
    uninstall_log_redaction()


# --- round trips ---------------------------------------------------------------------------


def test_secrets_round_trip(adconnect_db, vault):
    tid = make_tenant(adconnect_db)
    cid = make_connection(adconnect_db, tid)
    first, second = canary(), canary()
    with adconnect_db.tenant(tid) as conn:
        vault.put_secret(conn, tenant_id=tid, connection_id=cid, field="api_key", value=first)
        assert (
            vault.get_secret(conn, tenant_id=tid, connection_id=cid, field="api_key").get_secret_value()
            == first
        )
        vault.put_secret(conn, tenant_id=str(tid), connection_id=str(cid), field="api_key", value=second)
        vault.put_secret(conn, tenant_id=tid, connection_id=cid, field="other", value="é ✓ 🔑")
        assert vault.get_secret(conn, tenant_id=tid, connection_id=cid, field="missing") is None
    fresh = Vault(adconnect_db, vault.keyring)  # no cached data key
    with adconnect_db.tenant(tid) as conn:
        assert (
            fresh.get_secret(conn, tenant_id=tid, connection_id=cid, field="api_key").get_secret_value()
            == second
        )
        assert (
            fresh.get_secret(conn, tenant_id=tid, connection_id=cid, field="other").get_secret_value()
            == "é ✓ 🔑"
        )
        assert vault.delete_secrets(conn, tenant_id=tid, connection_id=cid) == 2
        assert vault.get_secret(conn, tenant_id=tid, connection_id=cid, field="api_key") is None
    (key,) = admin_rows(adconnect_db, tenant_keys)
    assert (key.version, key.state, key.master_key_id) == (1, "active", vault.keyring.ids[0])
    with pytest.raises(ValueError, match="snake_case"), adconnect_db.tenant(tid) as conn:
        vault.put_secret(conn, tenant_id=tid, connection_id=cid, field="a|b", value=first)


def test_token_sets_round_trip(adconnect_db, vault):
    tid = make_tenant(adconnect_db)
    cid = make_connection(adconnect_db, tid)
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = TokenSet(
        access_token=canary(),
        refresh_token=canary(),
        token_type="bearer",
        expires_at=expires,
        scopes=frozenset({"ads_read", "business_management"}),
        identity="user-42",
        metadata={"app": "x"},
    )
    with adconnect_db.tenant(tid) as conn:
        assert vault.load_token_set(conn, tenant_id=tid, connection_id=cid) is None
        vault.save_token_set(conn, tenant_id=tid, connection_id=cid, token=token)
    with adconnect_db.tenant(tid) as conn:
        loaded = Vault(adconnect_db, vault.keyring).load_token_set(conn, tenant_id=tid, connection_id=cid)
    assert loaded == token
    assert loaded.access_token.get_secret_value() == token.access_token.get_secret_value()
    assert loaded.refresh_token.get_secret_value() == token.refresh_token.get_secret_value()

    without_refresh = TokenSet(access_token=canary(), expires_at=expires + timedelta(days=1))
    with adconnect_db.tenant(tid) as conn:
        vault.save_token_set(conn, tenant_id=tid, connection_id=cid, token=without_refresh)
        loaded = vault.load_token_set(conn, tenant_id=tid, connection_id=cid)
    assert loaded == without_refresh
    assert loaded.refresh_token is None
    fields = {r.field for r in admin_rows(adconnect_db, credentials)}
    assert fields == {"access_token", "token_meta"}


def test_two_first_writers_create_one_data_key(adconnect_db, keyring):
    tid = make_tenant(adconnect_db)
    cids = [make_connection(adconnect_db, tid) for _ in range(4)]
    barrier, errors = threading.Barrier(len(cids)), []

    def write(cid) -> None:
        try:
            with adconnect_db.tenant(tid) as conn:
                barrier.wait()
                Vault(adconnect_db, keyring).put_secret(
                    conn, tenant_id=tid, connection_id=cid, field="api_key", value=str(cid)
                )
                time.sleep(0.2)  # hold the transaction open: the others race for version 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(cid,)) for cid in cids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [(k.version, k.state) for k in admin_rows(adconnect_db, tenant_keys)] == [(1, "active")]
    stored = {(tid, cid, "api_key"): str(cid) for cid in cids}
    assert read_all(adconnect_db, Vault(adconnect_db, keyring), stored) == stored


# --- binding and tampering -----------------------------------------------------------------


def test_a_ciphertext_copied_to_any_other_row_does_not_decrypt(adconnect_db, vault):
    stored = populate(adconnect_db, vault, tenant_count=2, connection_count=2)
    rows = {(r.tenant_id, r.connection_id, r.field): r for r in admin_rows(adconnect_db, credentials)}
    kinds, successes, attempts, errors = set(), 0, 0, []
    for source, target in itertools.permutations(stored, 2):
        kinds.add("tenant" if source[0] != target[0] else "connection" if source[1] != target[1] else "field")
        src, (tid, cid, field) = rows[source], target
        with adconnect_db.admin() as conn:
            conn.execute(
                update(credentials)
                .where(credentials.c.connection_id == cid, credentials.c.field == field)
                .values(key_version=src.key_version, nonce=src.nonce, ciphertext=src.ciphertext)
            )
        attempts += 1
        try:
            with adconnect_db.tenant(tid) as conn:
                Vault(adconnect_db, vault.keyring).get_secret(
                    conn, tenant_id=tid, connection_id=cid, field=field
                )
            successes += 1
        except CredentialDecryptError as exc:
            errors.append((exc, target, stored[source], stored[target]))
        finally:
            original = rows[target]
            with adconnect_db.admin() as conn:
                conn.execute(
                    update(credentials)
                    .where(credentials.c.connection_id == cid, credentials.c.field == field)
                    .values(
                        key_version=original.key_version, nonce=original.nonce, ciphertext=original.ciphertext
                    )
                )
    assert kinds == {"tenant", "connection", "field"}
    assert attempts == 8 * 7
    assert successes == 0
    for exc, (tid, cid, field), moved, replaced in errors:
        assert (exc.tenant_id, exc.connection_id, exc.field) == (tid, cid, field)
        assert str(cid) in exc.user_message
        assert repr(field) in exc.user_message
        assert moved not in f"{exc} {exc.hint}"
        assert replaced not in f"{exc} {exc.hint}"
        assert exc.to_dict()["code"] == "credential_undecryptable"
    assert read_all(adconnect_db, vault, stored) == stored


def test_flipping_any_byte_of_nonce_or_ciphertext_fails(adconnect_db, vault):
    stored = populate(adconnect_db, vault, tenant_count=1, connection_count=1, fields=("api_key",))
    ((tid, cid, field),) = stored
    (row,) = admin_rows(adconnect_db, credentials)
    failures = attempts = 0
    for column in ("nonce", "ciphertext"):
        original = bytes(getattr(row, column))
        for i in range(len(original)):
            tampered = bytearray(original)
            tampered[i] ^= 0x01
            with adconnect_db.admin() as conn:
                conn.execute(update(credentials).values({column: bytes(tampered)}))
            attempts += 1
            with adconnect_db.tenant(tid) as conn:
                try:
                    vault.get_secret(conn, tenant_id=tid, connection_id=cid, field=field)
                except CredentialDecryptError:
                    failures += 1
        with adconnect_db.admin() as conn:
            conn.execute(update(credentials).values({column: original}))
    assert attempts == 12 + len(row.ciphertext)
    assert failures == attempts
    assert read_all(adconnect_db, vault, stored) == stored


def test_a_tampered_or_foreign_data_key_is_a_configuration_error(adconnect_db, vault):
    stored = populate(adconnect_db, vault, tenant_count=1, connection_count=1)
    stranger = Vault(adconnect_db, MasterKeyring([generate_key()]))
    with pytest.raises(ConfigurationError) as info:
        read_all(adconnect_db, stranger, stored)
    assert info.value.code == "master_key_missing"
    (key,) = admin_rows(adconnect_db, tenant_keys)
    tampered = bytearray(key.wrapped_key)
    tampered[20] ^= 0x80
    with adconnect_db.admin() as conn:
        conn.execute(update(tenant_keys).values(wrapped_key=bytes(tampered)))
    with pytest.raises(ConfigurationError) as info:
        read_all(adconnect_db, Vault(adconnect_db, vault.keyring), stored)
    assert info.value.code == "data_key_undecryptable"


def test_a_tenant_transaction_cannot_see_another_tenants_credentials(adconnect_db, vault):
    stored = populate(adconnect_db, vault, tenant_count=2, connection_count=1)
    (a, _, _), (b, b_conn, _) = sorted(stored)[0], sorted(stored)[-1]
    assert a != b
    with adconnect_db.tenant(a) as conn:
        assert conn.execute(select(func.count()).select_from(credentials)).scalar_one() == 2
        assert (
            conn.execute(
                select(func.count()).select_from(credentials).where(credentials.c.tenant_id == b)
            ).scalar_one()
            == 0
        )
        assert conn.execute(select(func.count()).select_from(tenant_keys)).scalar_one() == 1
        assert vault.get_secret(conn, tenant_id=b, connection_id=b_conn, field="access_token") is None
        assert vault.load_token_set(conn, tenant_id=b, connection_id=b_conn) is None
    with adconnect_db.platform() as conn:
        assert conn.execute(select(func.count()).select_from(credentials)).scalar_one() == 0
    with pytest.raises(DBAPIError), adconnect_db.tenant(a) as conn:
        vault.put_secret(conn, tenant_id=b, connection_id=b_conn, field="access_token", value=canary())
    assert read_all(adconnect_db, vault, stored) == stored


# --- rotation ------------------------------------------------------------------------------


def test_master_key_rotation_rewraps_every_data_key(adconnect_db):
    old, new = generate_key(), generate_key()
    stored = populate(adconnect_db, Vault(adconnect_db, MasterKeyring([old])), tenant_count=3)
    make_tenant(adconnect_db)  # a tenant without credentials
    report = Vault(adconnect_db, MasterKeyring([new, old])).rotate_master_key()
    assert (report.tenants, report.deks_rewrapped) == (4, 3)
    assert report.unused_master_key_ids == (key_id(old),)
    assert key_id(old) in report.summary()
    assert {k.master_key_id for k in admin_rows(adconnect_db, tenant_keys)} == {key_id(new)}
    assert read_all(adconnect_db, Vault(adconnect_db, MasterKeyring([new])), stored) == stored
    again = Vault(adconnect_db, MasterKeyring([new, old])).rotate_master_key()
    assert again.deks_rewrapped == 0
    with pytest.raises(ConfigurationError, match=key_id(new)):
        read_all(adconnect_db, Vault(adconnect_db, MasterKeyring([old])), stored)


def test_tenant_key_rotation_moves_every_credential_to_a_new_key(adconnect_db, vault):
    stored = populate(
        adconnect_db,
        vault,
        tenant_count=2,
        connection_count=5,
        fields=("access_token", "refresh_token", "token_meta"),
    )
    before = {(r.connection_id, r.field): r.ciphertext for r in admin_rows(adconnect_db, credentials)}
    report = vault.rotate_tenant_keys(batch_size=4)
    assert report == RotationReport("tenant_keys", tenants=2, credentials_reencrypted=30, keys_retired=2)
    assert "30 credential(s) re-encrypted" in report.summary()
    rows = admin_rows(adconnect_db, credentials)
    assert {r.key_version for r in rows} == {2}
    assert all(r.ciphertext != before[(r.connection_id, r.field)] for r in rows)
    assert {(k.version, k.state) for k in admin_rows(adconnect_db, tenant_keys)} == {(2, "active")}
    assert read_all(adconnect_db, Vault(adconnect_db, vault.keyring), stored) == stored
    assert read_all(adconnect_db, vault, stored) == stored

    one = next(iter(stored))[0]
    report = vault.rotate_tenant_keys(one, batch_size=100)
    assert (report.tenants, report.credentials_reencrypted, report.keys_retired) == (1, 15, 1)
    assert {k.version for k in admin_rows(adconnect_db, tenant_keys, tenant_keys.c.tenant_id == one)} == {3}
    assert read_all(adconnect_db, Vault(adconnect_db, vault.keyring), stored) == stored
    with pytest.raises(NotFoundError):
        vault.rotate_tenant_keys(uuid.uuid4())


def test_a_data_key_a_writer_still_uses_is_kept_and_reported(adconnect_db, vault, keyring):
    stored = populate(adconnect_db, vault, tenant_count=1, connection_count=1, fields=("access_token",))
    ((tid, cid, _),) = stored
    writer = adconnect_db.tenant(tid)
    conn = writer.__enter__()
    late = canary()
    vault.put_secret(conn, tenant_id=tid, connection_id=cid, field="refresh_token", value=late)
    result: dict[str, RotationReport] = {}
    rotation = threading.Thread(
        target=lambda: result.update(report=Vault(adconnect_db, keyring).rotate_tenant_keys(tid))
    )
    rotation.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the rotation waits for the writer's lock
        with adconnect_db.admin() as admin:
            if admin.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one():
                break
        time.sleep(0.02)
    writer.__exit__(None, None, None)  # commits a row on the old data key
    rotation.join()
    report = result["report"]
    assert (report.credentials_reencrypted, report.keys_retired, report.keys_in_use) == (1, 0, 1)
    assert "1 still in use" in report.summary()
    keys = {(k.version, k.state) for k in admin_rows(adconnect_db, tenant_keys)}
    assert keys == {(1, "retiring"), (2, "active")}
    stored[(tid, cid, "refresh_token")] = late
    assert read_all(adconnect_db, Vault(adconnect_db, keyring), stored) == stored

    report = vault.rotate_tenant_keys(tid)
    assert (report.credentials_reencrypted, report.keys_retired, report.keys_in_use) == (2, 2, 0)
    assert {(k.version, k.state) for k in admin_rows(adconnect_db, tenant_keys)} == {(3, "active")}
    assert read_all(adconnect_db, Vault(adconnect_db, keyring), stored) == stored


def test_readers_and_writers_never_fail_while_keys_rotate(adconnect_db):
    old, new = generate_key(), generate_key()
    stored = populate(
        adconnect_db, Vault(adconnect_db, MasterKeyring([old])), tenant_count=2, connection_count=4
    )
    both = MasterKeyring([new, old])
    stop, failures, counts = threading.Event(), [], {"reads": 0, "writes": 0}

    def reader() -> None:
        while not stop.is_set():
            try:  # a fresh vault each time: no cached data key hides a failure
                assert read_all(adconnect_db, Vault(adconnect_db, both), stored) == stored
                counts["reads"] += len(stored)
            except BaseException as exc:
                failures.append(exc)

    def writer() -> None:
        writing = Vault(adconnect_db, both)
        for n in itertools.count():
            if stop.is_set():
                return
            tid, cid, _ = list(stored)[n % len(stored)]
            try:
                with adconnect_db.tenant(tid) as conn:
                    writing.put_secret(
                        conn, tenant_id=tid, connection_id=cid, field="scratch", value=f"scratch-{n}"
                    )
                    assert (
                        writing.get_secret(
                            conn, tenant_id=tid, connection_id=cid, field="scratch"
                        ).get_secret_value()
                        == f"scratch-{n}"
                    )
                counts["writes"] += 1
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    rotating = Vault(adconnect_db, both)
    try:
        for primary in (new, old, new):  # each master rotation rewraps every data key
            rotating.keyring = MasterKeyring([primary, new if primary == old else old])
            assert rotating.rotate_master_key().deks_rewrapped >= 2
            rotating.rotate_tenant_keys(batch_size=3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert counts["reads"] > 0
    assert counts["writes"] > 0
    final = rotating.rotate_tenant_keys()
    assert final.keys_in_use == 0
    assert len({k.version for k in admin_rows(adconnect_db, tenant_keys)}) == 1
    assert read_all(adconnect_db, Vault(adconnect_db, MasterKeyring([new])), stored) == stored


def test_rotating_the_key_file(adconnect_db, adconnect_settings):
    settings = adconnect_settings.model_copy(update={"master_key": None})
    before = MasterKeyring.from_settings(settings)
    stored = populate(adconnect_db, Vault(adconnect_db, before))
    stale = Vault(adconnect_db, before)  # another process that loaded the old file
    report = Vault.rotate_master_key_file(adconnect_db, settings)
    after = MasterKeyring.from_settings(settings)
    assert len(after) == 1
    assert after.primary.key_id != before.primary.key_id
    assert report.dropped_master_key_ids == (before.primary.key_id,)
    assert (report.tenants, report.deks_rewrapped) == (2, 2)
    assert stat.S_IMODE(settings.master_key_file.stat().st_mode) == 0o600
    wrapping = {k.master_key_id for k in admin_rows(adconnect_db, tenant_keys)}
    assert wrapping == {after.primary.key_id}
    assert read_all(adconnect_db, Vault(adconnect_db, after), stored) == stored
    assert read_all(adconnect_db, stale, stored) == stored  # re-reads the file on a new key id
    with pytest.raises(ConfigurationError, match="ADCONNECT_MASTER_KEY") as info:
        Vault.rotate_master_key_file(adconnect_db, adconnect_settings)
    assert "first" in info.value.hint


# --- nonces and leakage --------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_encryptions_never_repeat_a_nonce(adconnect_db, vault):
    tid = make_tenant(adconnect_db)
    cid = make_connection(adconnect_db, tid)
    with adconnect_db.tenant(tid) as conn:
        for n in range(10_000):
            vault.put_secret(
                conn, tenant_id=tid, connection_id=cid, field=f"f{n}", value="same value every time"
            )
    with adconnect_db.admin() as conn:
        total, distinct = conn.execute(select(func.count(), func.count(credentials.c.nonce.distinct()))).one()
    assert (total, distinct) == (10_000, 10_000)


def test_a_canary_secret_never_leaks(adconnect_db, vault, caplog, log_redaction):
    uninstall_log_redaction()  # first: nothing the vault logs may contain it, unredacted
    caplog.set_level(logging.DEBUG)
    at, rt = canary(), canary()
    tid = make_tenant(adconnect_db)
    cid, other = make_connection(adconnect_db, tid), make_connection(adconnect_db, tid)
    token = TokenSet(access_token=at, refresh_token=rt, identity="user-1")
    with adconnect_db.tenant(tid) as conn:
        vault.save_token_set(conn, tenant_id=tid, connection_id=cid, token=token)
        vault.put_secret(conn, tenant_id=tid, connection_id=other, field="access_token", value=at)
    with adconnect_db.tenant(tid) as conn:
        loaded = vault.load_token_set(conn, tenant_id=tid, connection_id=cid)
    vault.rotate_tenant_keys()
    vault.rotate_master_key()
    errors: list[BaseException] = []
    (source,) = admin_rows(adconnect_db, credentials, credentials.c.field == "refresh_token")
    with adconnect_db.admin() as conn:  # move the refresh token's ciphertext to another row
        conn.execute(
            update(credentials)
            .where(credentials.c.connection_id == other, credentials.c.field == "access_token")
            .values(nonce=source.nonce, ciphertext=source.ciphertext)
        )
    for call in (
        lambda c: vault.get_secret(c, tenant_id=tid, connection_id=other, field="access_token"),
        lambda c: vault.load_token_set(c, tenant_id=tid, connection_id=other),
    ):
        with pytest.raises(CredentialDecryptError) as info, adconnect_db.tenant(tid) as conn:
            call(conn)
        errors.append(info.value)
    report = vault.rotate_tenant_keys()  # skips the undecryptable row and logs why
    assert report.credentials_failed == 1
    stranger = Vault(adconnect_db, MasterKeyring([generate_key()]))
    with pytest.raises(ConfigurationError) as info, adconnect_db.tenant(tid) as conn:
        stranger.load_token_set(conn, tenant_id=tid, connection_id=cid)
    errors.append(info.value)

    shown = [caplog.text, repr(loaded), str(loaded), loaded.model_dump_json(), repr(token)]
    shown += [f"{e!s} {e!r} {e.to_dict()} {e.hint}" for e in errors]
    with adconnect_db.admin() as conn:  # and the database holds only ciphertext
        dump = b"".join(
            bytes(v)
            for table in (credentials, tenant_keys)
            for row in conn.execute(select(table))
            for v in row
            if isinstance(v, (bytes, memoryview))
        )
    for secret in (at, rt):
        assert all(secret not in text_ for text_ in shown)
        assert secret.encode() not in dump
    assert loaded.access_token.get_secret_value() == at

    install_log_redaction()
    caplog.clear()
    log = logging.getLogger("adconnect.tests.vault")
    log.warning("provider call with access_token=%s", at)
    try:
        raise RuntimeError(f"refresh failed for {rt}")
    except RuntimeError:
        log.exception("refresh failed")
    assert at not in caplog.text
    assert rt not in caplog.text
    assert "access_token=***" in caplog.text
    assert "refresh failed for ***" in caplog.text
