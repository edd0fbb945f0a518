"""``adconnect doctor``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from adconnect.cli._state import out
from adconnect.doctor import run_checks

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check settings, database, migrations, master key and plugins; say what to fix."""
    checks = run_checks()
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        out.print_json(json.dumps([c.__dict__ for c in checks]))
    else:
        table = Table(title="adconnect doctor")
        for column in ("check", "status", "detail", "what to do"):
            table.add_column(column, overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail, c.hint)
        out.print(table)
        out.print(f"{len(failed)} problem(s) found." if failed else "Everything looks right.")
    if failed:
        raise typer.Exit(1)
