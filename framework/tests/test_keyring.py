"""The master keyring: keys from ADCONNECT_MASTER_KEY or a private key file."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from adconnect.errors import ConfigurationError
from adconnect.keyring import MasterKeyring, generate_key, key_id, write_key_file
from adconnect.settings import FrameworkSettings


def _settings(tmp_path: Path, master_key: str | None = None) -> FrameworkSettings:
    return FrameworkSettings(data_dir=tmp_path / "data", master_key=master_key)


def _url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def test_keys_from_the_environment_newest_first(tmp_path):
    newest, older = generate_key(), bytes(range(224, 256))
    standard = base64.b64encode(older).decode()
    assert "+" in standard
    assert "/" in standard
    ring = MasterKeyring.from_settings(_settings(tmp_path, f"{_url(newest).rstrip('=')} , {standard},"))
    assert ring.ids == (key_id(newest), key_id(older))
    assert key_id(newest) == hashlib.sha256(newest).hexdigest()[:16]
    assert ring.primary.material == newest
    got = ring.get(key_id(older))
    assert got is not None
    assert got.material == older
    assert ring.get("0" * 16) is None
    assert not (tmp_path / "data").exists()  # the key file is not touched


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not base64 at all!!", "entry #1 is not valid base64"),
        (_url(b"k" * 16), "entry #1 decodes to 16 bytes, expected 32"),
        (f"{_url(b'k' * 32)},{_url(b's' * 40)}", "entry #2 decodes to 40 bytes"),
        (" , ", "set but empty"),
    ],
)
def test_malformed_environment_keys_are_named_but_never_shown(tmp_path, value, problem):
    with pytest.raises(ConfigurationError) as info:
        MasterKeyring.from_settings(_settings(tmp_path, value))
    assert problem in info.value.user_message
    shown = f"{info.value!s} {info.value!r} {info.value.to_dict()}"
    for part in value.split(","):
        if part.strip():
            assert part.strip() not in shown
    assert info.value.__cause__ is None


def test_the_key_file_is_created_private_and_reused(tmp_path):
    settings = _settings(tmp_path)
    ring = MasterKeyring.from_settings(settings)
    path = settings.master_key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.source == path
    again = MasterKeyring.from_settings(settings)
    assert again.ids == ring.ids
    assert again.primary.material == ring.primary.material
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"{ring.primary.key_id} {_url(ring.primary.material)}"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path, mode):
    settings = _settings(tmp_path)
    MasterKeyring.from_settings(settings)
    path = settings.master_key_file
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as info:
        MasterKeyring.from_settings(settings)
    assert info.value.hint == f"chmod 600 {path}"
    assert f"{mode:04o}" in info.value.user_message


def test_concurrent_first_runs_agree_on_one_key(tmp_path):
    settings = _settings(tmp_path)
    barrier = threading.Barrier(8)
    primaries: list[str] = []

    def load() -> None:
        barrier.wait()
        primaries.append(MasterKeyring.from_settings(settings).primary.key_id)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(primaries) == 8
    assert len(set(primaries)) == 1
    assert len(MasterKeyring.from_file(settings.master_key_file)) == 1


KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("garbage!!\n", "line 1 of the master key file"),
        (f"{'0' * 16} {_url(KEY)}\n", "does not match its key"),
        (f"# comment\n\n{key_id(KEY)} {_url(KEY[:16])}\n", "line 3"),
        (f"{key_id(KEY)} {_url(KEY)} extra\n", "has 3 fields"),
        ("# only comments\n", "keyring is empty"),
    ],
)
def test_a_malformed_key_file_is_refused_without_showing_keys(tmp_path, content, problem):
    path = tmp_path / "master.key"
    _write_private(path, content)
    with pytest.raises(ConfigurationError) as info:
        MasterKeyring.from_file(path)
    assert problem in info.value.user_message
    shown = f"{info.value!s} {info.value.hint}"
    assert _url(KEY) not in shown
    assert _url(KEY[:16]) not in shown


def test_a_missing_key_file_is_reported_when_not_created(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        MasterKeyring.from_file(tmp_path / "absent.key")


def test_write_key_file_is_atomic_private_and_ordered(tmp_path):
    path = tmp_path / "keys" / "master.key"
    first, second = generate_key(), generate_key()
    write_key_file(path, [first, second])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("#")
    assert MasterKeyring.from_file(path).ids == (key_id(first), key_id(second))
    write_key_file(path, [second])
    assert MasterKeyring.from_file(path).ids == (key_id(second),)
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]
    with pytest.raises(ConfigurationError):
        write_key_file(path, [])
    assert MasterKeyring.from_file(path).ids == (key_id(second),)


def test_refreshed_picks_up_a_rewritten_key_file(tmp_path):
    settings = _settings(tmp_path)
    ring = MasterKeyring.from_settings(settings)
    assert ring.refreshed() is ring
    newer = generate_key()
    write_key_file(settings.master_key_file, [newer, ring.primary.material])
    fresh = ring.refreshed()
    assert fresh.ids == (key_id(newer), ring.primary.key_id)
    env_ring = MasterKeyring([newer])
    assert env_ring.refreshed() is env_ring


def test_key_material_never_appears_in_repr(tmp_path):
    ring = MasterKeyring.from_settings(_settings(tmp_path))
    raw = ring.primary.material
    for text in (repr(ring), str(ring), repr(ring.primary), repr(list(ring))):
        assert _url(raw).rstrip("=") not in text
        assert raw.hex() not in text
        assert repr(raw) not in text
    assert ring.primary.key_id in repr(ring)


def test_generated_keys_are_32_random_bytes_and_rings_reject_bad_keys():
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert {len(k) for k in keys} == {32}
    with pytest.raises(ConfigurationError):
        MasterKeyring([b"short"])
    with pytest.raises(ConfigurationError):
        MasterKeyring([])
    key = generate_key()
    assert MasterKeyring([key, key]).ids == (key_id(key),)
