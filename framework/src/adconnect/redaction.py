"""The process-wide secret redactor: known secrets never reach a log line.

Every secret the framework handles (decrypted credentials, tokens it has just received) is
registered with :func:`register_secret`; :func:`redact` replaces each registered value in a
text with ``***``. :func:`install_log_redaction` makes the ``logging`` module apply
:func:`redact` to every record's formatted message and traceback as the record is created,
so no handler or formatter ever sees the raw value.

The registry is bounded: it keeps at most :data:`MAX_SECRETS` values and forgets the least
recently registered ones first (a secret that is still in use is registered again each
time it is loaded, which keeps it fresh). All functions are thread-safe.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any
from urllib.parse import quote

__all__ = [
    "MASK",
    "MAX_SECRETS",
    "MIN_SECRET_LENGTH",
    "SecretRegistry",
    "install_log_redaction",
    "redact",
    "register_secret",
    "uninstall_log_redaction",
]

MASK = "***"
#: Values shorter than this are not registered: masking them would mangle ordinary words.
MIN_SECRET_LENGTH = 6
#: Most values the default registry remembers before forgetting the oldest.
MAX_SECRETS = 10_000


class SecretRegistry:
    """A bounded, thread-safe set of secret strings and the redaction they imply.

    Values are indexed by their first :data:`MIN_SECRET_LENGTH` characters, so redaction
    costs one dictionary lookup per character of text however many secrets are known.

    :param max_size: how many values to remember; the least recently registered go first.
    """

    def __init__(self, max_size: int = MAX_SECRETS) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._values: dict[str, None] = {}  # an insertion-ordered set (oldest first)
        # prefix -> values with that prefix, longest first; lists are replaced, never mutated,
        # so redact() can read them without the lock.
        self._index: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def register(self, value: str) -> None:
        """Remember ``value`` (and its URL-encoded form) as secret; short values are ignored."""
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            for variant in dict.fromkeys((value, quote(value, safe=""))):
                if self._values.pop(variant, 0) is None:  # known: just make it the newest
                    self._values[variant] = None
                    continue
                self._values[variant] = None
                prefix = variant[:MIN_SECRET_LENGTH]
                bucket = (*self._index.get(prefix, ()), variant)
                self._index[prefix] = tuple(sorted(bucket, key=len, reverse=True))
            while len(self._values) > self.max_size:
                self._forget(next(iter(self._values)))

    def _forget(self, value: str) -> None:
        del self._values[value]
        prefix = value[:MIN_SECRET_LENGTH]
        bucket = tuple(v for v in self._index.get(prefix, ()) if v != value)
        if bucket:
            self._index[prefix] = bucket
        else:
            self._index.pop(prefix, None)

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``.

        Overlapping or adjacent secrets are masked as one span, so no part of either shows.
        """
        index = self._index
        if not text or not index:
            return text
        spans: list[tuple[int, int]] = []
        for i in range(len(text) - MIN_SECRET_LENGTH + 1):
            bucket = index.get(text[i : i + MIN_SECRET_LENGTH])
            if not bucket:
                continue
            for value in bucket:  # longest first
                if text.startswith(value, i):
                    stop = i + len(value)
                    if spans and i <= spans[-1][1]:
                        spans[-1] = (spans[-1][0], max(spans[-1][1], stop))
                    else:
                        spans.append((i, stop))
                    break
        if not spans:
            return text
        parts, last = [], 0
        for begin, stop in spans:
            parts += [text[last:begin], MASK]
            last = stop
        parts.append(text[last:])
        return "".join(parts)

    def clear(self) -> None:
        """Forget every registered value."""
        with self._lock:
            self._values.clear()
            self._index = {}


_registry = SecretRegistry()


def register_secret(value: str) -> None:
    """Register ``value`` with the process-wide redactor (ignored when under 6 characters).

    :param value: a secret that must never appear in logs or messages.
    """
    _registry.register(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``.

    :param text: any text about to leave the process (a log line, an error body).
    :returns: the text with secrets masked.
    """
    return _registry.redact(text)


# --- logging -------------------------------------------------------------------------------

_install_lock = threading.Lock()
_MARKER = "_adconnect_redacting"


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: keep both, masked
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Make every log record carry an already-redacted message and traceback (idempotent).

    Wraps the current :func:`logging.getLogRecordFactory`: each new record's message is
    formatted once (``getMessage()``), redacted and stored in ``record.msg`` with
    ``record.args = None``; an exception is formatted into a redacted ``record.exc_text``,
    which formatters print instead of formatting ``exc_info`` again.
    """
    with _install_lock:
        current = logging.getLogRecordFactory()
        if getattr(current, _MARKER, False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            _redact_record(record)
            return record

        setattr(factory, _MARKER, True)
        factory.wrapped = current  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


def uninstall_log_redaction() -> None:
    """Restore the record factory that :func:`install_log_redaction` wrapped, if it is current.

    Meant for tests; a factory installed on top of ours afterwards is left alone.
    """
    with _install_lock:
        current = logging.getLogRecordFactory()
        if getattr(current, _MARKER, False):
            logging.setLogRecordFactory(current.wrapped)  # type: ignore[attr-defined]
