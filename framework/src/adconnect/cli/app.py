"""The root ``adconnect`` command: global options and the one error handler.

Errors reach the user as one line (and a hint), never as a traceback; ``--debug`` shows the
traceback too.
"""

from __future__ import annotations

import logging
import traceback
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from adconnect.cli import db_cmd, doctor_cmd, keys_cmd, plugin_cmd, providers_cmd, run_cmd, tenants_cmd
from adconnect.cli._state import configure_logging, err, state
from adconnect.errors import AdconnectError
from adconnect.redaction import redact


class _Group(TyperGroup):
    """Turns every error into one clear line with a hint, and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except AdconnectError as exc:
            _report(ctx, f"error: {exc.user_message}", exc.hint)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            _report(ctx, f"unexpected error: {type(exc).__name__}: {exc}",
                    "this is a bug in adconnect or a plugin; run with --debug for the traceback")
            raise typer.Exit(2) from None


def _report(ctx: click.Context, message: str, hint: str | None) -> None:
    if state(ctx).debug:
        err.print(redact(traceback.format_exc()), markup=False, highlight=False)
    err.print(redact(message), style="bold red", markup=False, highlight=False)
    if hint:
        err.print(f"hint: {redact(hint)}", markup=False, highlight=False)


app = typer.Typer(
    name="adconnect",
    cls=_Group,
    help="adconnect: connect tenants to ad providers, keep their data fresh, serve reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """adconnect: connect tenants to ad providers, keep their data fresh, serve reports.

    Settings come from ADCONNECT_* environment variables (or .env). Without
    ADCONNECT_DATABASE_URL an embedded PostgreSQL runs in the data directory.
    """
    cli = state(ctx)
    cli.debug = debug
    configure_logging("WARNING", debug=debug)
    logging.getLogger("adconnect").setLevel(logging.DEBUG if debug else logging.WARNING)


app.add_typer(providers_cmd.app, name="providers")
app.add_typer(tenants_cmd.app, name="tenants")
app.add_typer(plugin_cmd.app, name="plugin")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(db_cmd.app, name="db")
app.command("doctor")(doctor_cmd.doctor)
app.command("run")(run_cmd.run)


def main() -> None:
    """Console-script entry point."""
    app()
