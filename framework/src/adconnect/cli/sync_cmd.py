"""``adconnect sync`` (one sync now, in the foreground) and ``adconnect runs`` (what happened)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Text, cast, select

from adconnect.cli._state import CliState, guarded, out, state
from adconnect.connections import ConnectionService
from adconnect.db.schema import api_error_log, sync_runs
from adconnect.errors import ConfigurationError, NotFoundError
from adconnect.keyring import MasterKeyring
from adconnect.quota import QuotaGovernor
from adconnect.sync.engine import Progress as SyncProgress
from adconnect.sync.engine import StreamOptions, SyncEngine
from adconnect.tenants import list_tenants, resolve_tenant

runs_app = typer.Typer(help="List sync runs and show one with its API errors.", invoke_without_command=True)


def _date(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{name} {value!r} is not a date (YYYY-MM-DD) or ISO timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def services(cli: CliState) -> tuple[ConnectionService, SyncEngine]:
    db, host = cli.database(), cli.plugins()
    keyring = MasterKeyring.from_settings(cli.settings())
    return ConnectionService.create(db, host, keyring), SyncEngine(db, host, QuotaGovernor(db))


@guarded
def sync(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug, name or id.")],
    provider: Annotated[str, typer.Option("--provider", "-p", help="Provider id.")],
    stream: Annotated[
        list[str] | None, typer.Option("--stream", "-s", help="Only this stream (repeatable).")
    ] = None,
    connection: Annotated[
        str | None, typer.Option(help="Connection name (default: every connection).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Read from this date (UTC), ignoring the saved state.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Read up to this date (UTC, exclusive).")] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Ignore saved state; re-read the backfill.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run one sync now, in the foreground, with progress per stream and a summary."""
    options = StreamOptions(
        since=_date(since, "--since"), until=_date(until, "--until"), full_refresh=full_refresh
    )
    cli = state(ctx)
    service, engine = services(cli)
    found = resolve_tenant(cli.database(), tenant)
    cli.plugins().provider(provider)
    records = [r for r in service.list(found.id, provider) if connection in (None, r.name)]
    if not records:
        raise NotFoundError(
            f"{found.slug} has no {provider} connection" + (f" named {connection!r}" if connection else ""),
            hint=f"connect one: `adconnect connect start --tenant {found.slug} --provider {provider} ...`",
        )
    summaries: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=out,
        disable=as_json,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def show(p: SyncProgress) -> None:
            if p.stream not in tasks:
                tasks[p.stream] = bar.add_task(p.stream, total=p.chunks_total or 1, detail="")
            bar.update(
                tasks[p.stream],
                completed=p.chunks_done,
                total=max(p.chunks_total, 1),
                detail=f"{p.records:,} records, {p.api_calls} API calls, "
                f"{p.rate_limit_wait_seconds:.1f}s rate-limit waits",
            )

        for record in records:
            for result in engine.sync_connection(
                service, found.id, record.id, streams=stream or None, options=options, on_progress=show
            ):
                summaries.append({"connection": record.name, **result.summary()})
    if as_json:
        out.print_json(json.dumps({"tenant": found.slug, "provider": provider, "streams": summaries}))
    else:
        _summary_table(summaries)
    if any(s["status"] == "failed" for s in summaries):
        raise typer.Exit(1)


def _summary_table(summaries: list[dict[str, Any]]) -> None:
    table = Table(title="Sync summary")
    for column in (
        "stream",
        "status",
        "window",
        "read",
        "new",
        "updated",
        "removed",
        "skipped",
        "API calls",
        "waits",
        "time",
    ):
        table.add_column(column, no_wrap=column in ("stream", "status"))
    for s in summaries:
        window = (
            f"{(s['window_start'] or '')[:10]} → {(s['window_end'] or '')[:10]}" if s["window_start"] else "-"
        )
        table.add_row(
            s["stream"],
            s["status"],
            window,
            f"{s['records_read']:,}",
            f"{s['records_inserted']:,}",
            f"{s['records_updated']:,}",
            f"{s['records_deleted']:,}",
            f"{s['records_skipped']:,}",
            str(s["api_calls"]),
            f"{s['rate_limit_wait_seconds']:.1f}s",
            f"{s['duration_seconds']:.1f}s",
        )
    out.print(table)
    for s in summaries:
        if s["error_class"]:
            out.print(f"[bold red]{s['stream']}: {s['error_class']}[/]: {escape(s['error_message'] or '')}")


# --- adconnect runs ------------------------------------------------------------------------


def _run_row(r: Any) -> dict[str, Any]:
    duration = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
    return {
        "id": str(r.id),
        "tenant_id": str(r.tenant_id),
        "provider": r.provider_id,
        "stream": r.stream,
        "status": r.status,
        "trigger": r.trigger,
        "window_start": r.window_start.isoformat() if r.window_start else None,
        "window_end": r.window_end.isoformat() if r.window_end else None,
        "started_at": r.started_at.isoformat(),
        "duration_seconds": duration,
        "records_read": r.records_read,
        "records_inserted": r.records_inserted,
        "records_updated": r.records_updated,
        "records_deleted": r.records_deleted,
        "records_skipped": r.records_skipped,
        "api_calls": r.api_calls,
        "rate_limit_wait_seconds": r.rate_limit_wait_seconds,
        "error_class": r.error_class,
        "error_message": r.error_message,
    }


@runs_app.callback()
@guarded
def runs(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Only this provider.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed runs.")] = False,
    limit: Annotated[int, typer.Option(help="How many (newest first).", min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List sync runs: status, window, counts, duration and error class."""
    if ctx.invoked_subcommand is not None:
        return
    cli = state(ctx)
    db = cli.database()
    tenants = [resolve_tenant(db, tenant)] if tenant else list_tenants(db)
    rows: list[dict[str, Any]] = []
    for t in tenants:
        query = select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(limit)
        if provider:
            query = query.where(sync_runs.c.provider_id == provider)
        if failed:
            query = query.where(sync_runs.c.status == "failed")
        with db.tenant(t.id) as conn:
            rows += [{"tenant": t.slug, **_run_row(r)} for r in conn.execute(query).all()]
    rows.sort(key=lambda r: r["started_at"], reverse=True)
    rows = rows[:limit]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("No sync runs yet. `adconnect sync --tenant T --provider P` runs one now.")
        return
    table = Table(title="Sync runs (newest first)")
    for column in (
        "id",
        "tenant",
        "provider.stream",
        "status",
        "window",
        "read",
        "new",
        "updated",
        "duration",
        "error",
    ):
        table.add_column(column, no_wrap=column in ("id", "status"))
    for r in rows:
        window = (
            f"{(r['window_start'] or '')[:10]} → {(r['window_end'] or '')[:10]}" if r["window_start"] else "-"
        )
        table.add_row(
            r["id"][:8],
            r["tenant"],
            f"{r['provider']}.{r['stream']}",
            r["status"],
            window,
            f"{r['records_read']:,}",
            f"{r['records_inserted']:,}",
            f"{r['records_updated']:,}",
            f"{r['duration_seconds']:.1f}s" if r["duration_seconds"] is not None else "running",
            r["error_class"] or "",
        )
    out.print(table)


@runs_app.command("show")
@guarded
def show_run(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id (or its first 8 characters).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one run with its counts, details and the provider API errors it met."""
    cli = state(ctx)
    db = cli.database()
    for t in list_tenants(db):
        with db.tenant(t.id) as conn:
            query = select(sync_runs)
            try:
                query = query.where(sync_runs.c.id == UUID(run_id))
            except ValueError:
                query = query.where(cast(sync_runs.c.id, Text).startswith(run_id.lower()))
            found = conn.execute(query.limit(2)).all()
            if not found:
                continue
            if len(found) > 1:
                raise ConfigurationError(f"{run_id!r} matches several runs", hint="give more of the id")
            run = found[0]
            errors = conn.execute(
                select(api_error_log)
                .where(api_error_log.c.run_id == run.id)
                .order_by(api_error_log.c.created_at)
            ).all()
            body = {
                "tenant": t.slug,
                **_run_row(run),
                "details": run.details,
                "api_errors": [
                    {
                        "at": e.created_at.isoformat(),
                        "endpoint": e.endpoint,
                        "account": e.account_id,
                        "status": e.status_code,
                        "code": e.error_code,
                        "subcode": e.error_subcode,
                        "retryable": e.retryable,
                        "message": e.message,
                    }
                    for e in errors
                ],
            }
            if as_json:
                out.print_json(json.dumps(body, default=str))
            else:
                for key, value in body.items():
                    if key not in ("api_errors", "details"):
                        out.print(f"{key:>24}: {escape(str(value))}")
                out.print(f"{'details':>24}: {escape(json.dumps(body['details']))}")
                out.print(f"API errors ({len(errors)}):" if errors else "No API errors.")
                for e in body["api_errors"]:
                    out.print(
                        f"  {e['at']} {e['endpoint']} status={e['status']} code={e['code']} "
                        f"retryable={e['retryable']}: {escape(e['message'])}"
                    )
            return
    raise NotFoundError(f"no sync run {run_id!r}", hint="`adconnect runs` lists them")
