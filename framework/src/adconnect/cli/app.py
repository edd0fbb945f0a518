"""The root ``adconnect`` command: global options and the one error handler.

Errors reach the user as one line (and a hint), never as a traceback; ``--debug`` shows the
traceback too.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from adconnect.cli import (
    _state,
    connect_cmd,
    db_cmd,
    doctor_cmd,
    emulate_cmd,
    keys_cmd,
    plugin_cmd,
    providers_cmd,
    run_cmd,
    schedules_cmd,
    sync_cmd,
    tenants_cmd,
)
from adconnect.cli._state import configure_logging, guarded, state

app = typer.Typer(
    name="adconnect",
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
    cli.debug = _state.DEBUG[0] = debug
    configure_logging("WARNING", debug=debug)
    logging.getLogger("adconnect").setLevel(logging.DEBUG if debug else logging.WARNING)


app.add_typer(providers_cmd.app, name="providers")
app.add_typer(tenants_cmd.app, name="tenants")
app.add_typer(plugin_cmd.app, name="plugin")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(db_cmd.app, name="db")
app.add_typer(connect_cmd.connect_app, name="connect")
app.add_typer(connect_cmd.connections_app, name="connections")
app.add_typer(sync_cmd.runs_app, name="runs")
app.add_typer(schedules_cmd.app, name="schedules")
app.command("sync")(sync_cmd.sync)
app.command("emulate")(emulate_cmd.emulate)
app.command("doctor")(guarded(doctor_cmd.doctor))
app.command("run")(guarded(run_cmd.run))


def main() -> None:
    """Console-script entry point."""
    app()
