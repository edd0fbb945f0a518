"""``adconnect run`` as real processes, for tests of replicas, leadership and crash recovery.

:class:`RunnerProcess` starts one runner and collects its output on a thread, so a test can wait
for a line, count lines and SIGKILL or stop runners in any order without blocking on a pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["RunnerProcess", "runner_env"]


def runner_env(base: dict[str, str] | None = None, **settings: str) -> dict[str, str]:
    """The environment without any inherited ``ADCONNECT_*`` variable, plus ``settings``."""
    env = {
        k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("ADCONNECT_")
    }
    env.update(settings)
    return env


class RunnerProcess:
    """One ``adconnect run`` subprocess (stdout and stderr merged, read on a thread)."""

    def __init__(self, env: dict[str, str], *, label: str = "runner") -> None:
        self.label = label
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adconnect", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{label}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def count(self, text: str) -> int:
        """How many output lines contain ``text`` so far."""
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, timeout: float = 60, *, times: int = 1) -> None:
        """Wait until ``times`` output lines contain ``text``; fail with the output if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in self.lines) < times:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{self.label}: {text!r} not seen; output:\n{''.join(self.lines)}")
                self._changed.wait(min(remaining, 0.5))

    def kill(self) -> int:
        """SIGKILL: no cleanup at all, like a power cut."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(30)

    def send(self, sig: int) -> None:
        """Send ``sig`` (SIGTERM, SIGINT...) without waiting."""
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to exit; returns the exit code."""
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Ask it to stop (SIGTERM or SIGINT) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)

    def __enter__(self) -> RunnerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
        self._reader.join(5)
