"""The master keyring: the AES-256 keys that wrap every tenant's data keys.

Keys come from ``ADCONNECT_MASTER_KEY`` (comma-separated base64, newest first) or, when that
is unset, from the key file ``master.key`` in the data directory, created on first run with
mode 0600. The file holds one key per line, newest first::

    # comments are allowed
    <key_id> <urlsafe-base64 key>

``key_id`` is the first 16 hex characters of the key's SHA-256: it names a key in the
database (``tenant_keys.master_key_id``) without revealing it. No error message, ``repr`` or
log line ever contains key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adconnect.errors import ConfigurationError
from adconnect.settings import FrameworkSettings

__all__ = ["KEY_BYTES", "MasterKey", "MasterKeyring", "generate_key", "key_id", "write_key_file"]

KEY_BYTES = 32
_HEADER = (
    "# adconnect master keys, newest (primary) first: <key_id> <urlsafe-base64 key>.\n"
    "# Keep this file private (mode 0600) and backed up: without it no stored credential\n"
    "# can be decrypted.\n"
)


def key_id(key: bytes) -> str:
    """The public name of ``key``: the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def generate_key() -> bytes:
    """A new random 32-byte AES-256 key."""
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class MasterKey:
    """One master key. ``material`` never appears in ``repr``."""

    key_id: str
    material: bytes = field(repr=False)


def _decode(encoded: str, where: str) -> bytes:
    text = encoded.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"{where} is not valid base64",
            hint='generate one with `python -c "import os,base64;print('
            'base64.urlsafe_b64encode(os.urandom(32)).decode())"`',
        ) from None
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(
            f"{where} decodes to {len(raw)} bytes, expected {KEY_BYTES}",
            hint="a master key is 32 random bytes, base64-encoded",
        )
    return raw


class MasterKeyring:
    """An ordered list of master keys, newest (primary) first.

    :param keys: raw 32-byte keys, newest first; duplicates are dropped.
    :param source: the key file the keys were read from, if any (see :meth:`refreshed`).
    """

    def __init__(self, keys: Sequence[bytes], *, source: Path | None = None) -> None:
        ring: list[MasterKey] = []
        for raw in keys:
            if len(raw) != KEY_BYTES:
                raise ConfigurationError(f"a master key must be {KEY_BYTES} bytes, got {len(raw)}")
            if all(k.material != raw for k in ring):
                ring.append(MasterKey(key_id(raw), raw))
        if not ring:
            raise ConfigurationError(
                "the master keyring is empty", hint="set ADCONNECT_MASTER_KEY or keep the key file"
            )
        self._keys = tuple(ring)
        self._by_id = {k.key_id: k for k in ring}
        self.source = source
        self._signature = _file_signature(source) if source is not None else None

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: FrameworkSettings) -> MasterKeyring:
        """Load the keys named by ``settings``: ``ADCONNECT_MASTER_KEY`` or the key file.

        The key file is created (mode 0600, directory included) when it does not exist.

        :raises ConfigurationError: a key is malformed or the key file is not private.
        """
        if settings.master_key is not None:
            value = settings.master_key.get_secret_value()
            parts = [p for p in value.split(",") if p.strip()]
            if not parts:
                raise ConfigurationError(
                    "ADCONNECT_MASTER_KEY is set but empty", hint="unset it to use the key file, or set a key"
                )
            return cls([_decode(p, f"ADCONNECT_MASTER_KEY entry #{i}") for i, p in enumerate(parts, 1)])
        return cls.from_file(settings.master_key_file, create=True)

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> MasterKeyring:
        """Read a key file; with ``create``, first create it with one new key if missing."""
        path = Path(path)
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):  # another process won the race
                _write_atomic(path, _render([generate_key()]), exclusive=True)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ConfigurationError(
                f"the master key file {path} does not exist",
                hint="restore it from backup or set ADCONNECT_MASTER_KEY",
            ) from None
        with os.fdopen(fd, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise ConfigurationError(
                    f"the master key file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o})",
                    hint=f"chmod 600 {path}",
                )
            content = handle.read()
        return cls(list(_parse(content, path)), source=path)

    def refreshed(self) -> MasterKeyring:
        """This keyring, or a fresh one when its key file changed since it was read.

        Lets long-running processes pick up a key added by ``rotate_master_key_file`` in
        another process. Keyrings from ``ADCONNECT_MASTER_KEY`` never change.
        """
        if self.source is None:
            return self
        signature = _file_signature(self.source)
        if signature is None or signature == self._signature:  # unchanged, or gone: keep ours
            return self
        return MasterKeyring.from_file(self.source)

    # --- access ----------------------------------------------------------------------------

    @property
    def primary(self) -> MasterKey:
        """The newest key: every new or rewrapped data key is wrapped with it."""
        return self._keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        """Key ids, newest first."""
        return tuple(k.key_id for k in self._keys)

    @property
    def keys(self) -> tuple[MasterKey, ...]:
        """All keys, newest first."""
        return self._keys

    def get(self, key_id: str) -> MasterKey | None:
        """The key named ``key_id``, or ``None`` when this keyring does not hold it."""
        return self._by_id.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        where = f", source={str(self.source)!r}" if self.source else ""
        return f"MasterKeyring(ids={list(self.ids)!r}{where})"


# --- the key file --------------------------------------------------------------------------


def _parse(content: str, path: Path) -> Iterator[bytes]:
    for number, line in enumerate(content.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"line {number} of the master key file {path}"
        if len(fields) > 2:
            raise ConfigurationError(
                f"{where} has {len(fields)} fields, expected `<key_id> <base64 key>`",
                hint="restore the file from backup",
            )
        raw = _decode(fields[-1], where)
        if len(fields) == 2 and fields[0] != key_id(raw):
            raise ConfigurationError(
                f"{where}: key id {fields[0]!r} does not match its key",
                hint="the line was edited or truncated; restore the file",
            )
        yield raw


def _render(keys: Sequence[bytes]) -> str:
    lines = [f"{key_id(k)} {base64.urlsafe_b64encode(k).decode()}" for k in keys]
    return _HEADER + "\n".join(lines) + "\n"


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_atomic(path: Path, content: str, *, exclusive: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o600)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if path exists: the first writer wins
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file at ``path`` atomically with ``keys`` (newest first), mode 0600.

    :param path: the key file (its directory is created if needed).
    :param keys: raw 32-byte keys, newest first.
    """
    ring = MasterKeyring(keys)  # validates
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_atomic(path, _render([k.material for k in ring]), exclusive=False)
