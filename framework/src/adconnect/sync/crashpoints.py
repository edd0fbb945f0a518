"""Named crash points for crash-safety tests: ``ADCONNECT_CRASHPOINT=<name>:<n>`` kills the process
(SIGKILL, no cleanup, like a power cut) the n-th time execution reaches ``hit(<name>)``.

Unset (always, outside those tests), :func:`hit` is one dictionary lookup. The points sit at
every boundary of a chunk's life: after the window is prepared, after each staged batch, in the
middle of a COPY, before and after rows move into the raw table, after the state is saved (not
yet committed) and after the commit.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["armed", "hit"]

_target: tuple[str, int] | None = None
_counts: Counter[str] = Counter()


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    return name, int(count or "1")


_target = _parse(os.environ.get("ADCONNECT_CRASHPOINT"))


def armed(name: str) -> bool:
    """Whether ``name`` is the configured crash point (lets hot loops skip the check otherwise)."""
    return _target is not None and _target[0] == name


def hit(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process when it is the configured one."""
    if _target is None or _target[0] != name:
        return
    _counts[name] += 1
    if _counts[name] >= _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
