"""``adconnect db``: migrate the schema and show where the database is."""

from __future__ import annotations

import typer

from adconnect.cli._state import guarded, out, state
from adconnect.db.database import describe_url

app = typer.Typer(help="Database schema and location.", no_args_is_help=True)


@app.command()
@guarded
def migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (safe to run while the platform is up)."""
    db = state(ctx).database(require_migrated=False)
    before, after = db.migrate()
    if before == after:
        out.print(f"schema is up to date ({after})")
    else:
        out.print(f"migrated from {before or 'an empty database'} to {after}")


@app.command()
@guarded
def status(ctx: typer.Context) -> None:
    """Show the database URL (without password) and schema revision."""
    cli = state(ctx)
    db = cli.database(require_migrated=False)
    current, head = db.current_revision(), db.head_revision()
    where = "embedded PostgreSQL in " + str(cli.settings().embedded_pgdata) if db.embedded else "external"
    out.print(f"database: {describe_url(db.admin_url)} ({where})")
    out.print(f"app role: {db.app_role}")
    out.print(f"schema:   {current or 'empty'} (newest: {head})")
