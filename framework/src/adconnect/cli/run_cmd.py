"""``adconnect run``: start the platform (what `make up` runs) and keep it in the foreground."""

from __future__ import annotations

import logging

import typer

from adconnect.cli._state import configure_logging, out, state
from adconnect.db.database import describe_url
from adconnect.keyring import MasterKeyring
from adconnect.runner import Runner


def run(ctx: typer.Context) -> None:
    """Start the runner: migrate the database, then keep every tenant's data fresh until Ctrl-C."""
    cli = state(ctx)
    settings = cli.settings()
    configure_logging(settings.log_level, debug=cli.debug)
    logging.getLogger("adconnect").setLevel(logging.DEBUG if cli.debug else settings.log_level.upper())
    # per-job and per-request lines repeat ours ("fired ...", "sync job ... finished")
    for chatty in ("procrastinate", "httpx"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if cli.debug else logging.WARNING)
    db = cli.database(require_migrated=False)
    before, after = db.migrate()
    keyring = MasterKeyring.from_settings(settings)  # creates the key file on first run
    key_source = "ADCONNECT_MASTER_KEY" if settings.master_key else f"{settings.master_key_file} (mode 0600)"
    host = cli.plugins()
    where = f"embedded PostgreSQL, data in {settings.embedded_pgdata}" if db.embedded else "external server"
    out.print("[bold]adconnect runner[/bold]")
    out.print(f"  data directory: {settings.data_dir}")
    out.print(f"  database:       {describe_url(db.admin_url)} ({where})")
    out.print(f"  master key:     {key_source}, {len(keyring.ids)} key(s)")
    out.print(
        f"  schema:         {after}" + ("" if before == after else f" (migrated from {before or 'empty'})")
    )
    out.print(
        f"  providers:      {', '.join(host.provider_ids()) or 'none installed'}"
        + (f" ({len(host.problems)} failed to load: `adconnect doctor`)" if host.problems else "")
    )
    out.print(f"  time zone:      {settings.timezone}")
    out.print(
        f"  replicas:       leader election every {settings.leader_poll_seconds:g}s, "
        f"{settings.worker_concurrency} sync job(s) at a time here"
    )
    out.print("Press Ctrl-C to stop.")
    Runner(settings, db, host).run_forever()
    out.print("runner stopped.")
