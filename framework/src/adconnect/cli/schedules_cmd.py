"""``adconnect schedules``: the effective sync schedules of a tenant, and overrides of them.

A running leader picks changes up within ``ADCONNECT_SCHEDULE_REFRESH_SECONDS``; no restart.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table

from adconnect.cli._state import CliState, guarded, out, state
from adconnect.errors import ConfigurationError
from adconnect.scheduling.cron import build_trigger, check_timezone, next_fire_after
from adconnect.scheduling.plan import EffectiveSchedule, compute_schedules
from adconnect.scheduling.store import ScheduleTarget, resolve_target, set_schedule, set_schedule_enabled
from adconnect.tenants import Tenant, resolve_tenant

app = typer.Typer(
    help="List the sync schedules of a tenant; override, disable or enable them.", no_args_is_help=True
)

TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug, name or id.")]
ProviderOption = Annotated[str, typer.Option("--provider", "-p", help="Provider id.")]
ConnectionOption = Annotated[
    str | None,
    typer.Option("--connection", "-c", help="Connection name (default: every connection of the provider)."),
]
NameOption = Annotated[str, typer.Option("--name", "-n", help="Schedule name, e.g. hourly.")]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _row(s: EffectiveSchedule, now: dt.datetime) -> dict[str, Any]:
    fire = s.next_fire(now)
    return {
        "connection": s.connection_name,
        "connection_id": str(s.connection_id),
        "provider": s.provider_id,
        "name": s.name,
        "cron": s.cron,
        "timezone": s.timezone,
        "streams": list(s.streams),
        "source": s.source,
        "enabled": s.enabled,
        "active": s.active,
        "inactive_reason": s.inactive_reason,
        "next_fire": fire.isoformat() if fire else None,
        "last_fired_at": s.last_fired_at.isoformat() if s.last_fired_at else None,
    }


@app.command("list")
@guarded
def list_schedules(
    ctx: typer.Context,
    tenant: TenantOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every connection's effective schedules: source, state, next fire (in the schedule's zone)."""
    cli = state(ctx)
    db, settings = cli.database(), cli.settings()
    found = resolve_tenant(db, tenant)
    now = dt.datetime.now(dt.UTC)
    rows = [
        _row(s, now) for s in compute_schedules(db, cli.plugins(), settings.timezone, tenant_ids=[found.id])
    ]
    if as_json:
        out.print_json(json.dumps({"tenant": found.slug, "schedules": rows}))
        return
    if not rows:
        out.print(f"{found.slug} has no connection with a schedule. `adconnect connect start` makes one.")
        return
    table = Table(title=f"Schedules of {found.slug}")
    for column in (
        "connection",
        "provider",
        "name",
        "cron",
        "time zone",
        "streams",
        "source",
        "state",
        "next fire",
    ):
        table.add_column(column, no_wrap=column in ("name", "cron", "next fire"))
    for r in rows:
        table.add_row(
            r["connection"],
            r["provider"],
            r["name"],
            r["cron"],
            r["timezone"],
            ", ".join(r["streams"]),
            r["source"],
            "active" if r["active"] else f"off: {r['inactive_reason']}",
            (r["next_fire"] or "-")[:19].replace("T", " "),
        )
    out.print(table)


def _target(
    cli: CliState, tenant: str, provider: str, connection: str | None
) -> tuple[Tenant, ScheduleTarget]:
    db = cli.database()
    found = resolve_tenant(db, tenant)
    return found, resolve_target(db, cli.plugins(), found.id, provider, connection)


def _where(found: Tenant, target: ScheduleTarget) -> str:
    return f"{found.slug}/{target.provider_id}" + (
        f"/{target.connection_name}" if target.connection_name else ""
    )


@app.command("set")
@guarded
def set_cmd(
    ctx: typer.Context,
    tenant: TenantOption,
    provider: ProviderOption,
    name: NameOption,
    cron: Annotated[str, typer.Option("--cron", help="5-field crontab: minute hour day month day-of-week.")],
    connection: ConnectionOption = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA zone (default: ADCONNECT_TIMEZONE).")
    ] = None,
    streams: Annotated[
        str | None, typer.Option("--streams", help="Comma-separated streams (default: as inherited).")
    ] = None,
) -> None:
    """Override (or add) a schedule for a tenant's provider, or for one connection."""
    cli = state(ctx)
    if not _NAME.match(name):
        raise ConfigurationError(
            f"invalid schedule name {name!r}", hint="use snake_case, e.g. hourly or nightly"
        )
    zone = timezone or cli.settings().timezone
    check_timezone(zone)
    trigger = build_trigger(cron, zone)
    stream_list = [s.strip() for s in streams.split(",") if s.strip()] if streams is not None else None
    found, target = _target(cli, tenant, provider, connection)
    set_schedule(
        cli.database(), cli.plugins(), target, name=name, cron=cron, timezone=zone, streams=stream_list
    )
    fire = next_fire_after(trigger, dt.datetime.now(dt.UTC))
    out.print(
        f"schedule {name} of {_where(found, target)} set: {cron!r} in {zone}"
        + (f"; next fire {fire.isoformat()}" if fire else "")
    )


def _inherited(cli: CliState, found: Tenant, target: ScheduleTarget, name: str) -> tuple[str, str] | None:
    """The cron and zone the target's level inherits for ``name`` (None: no such schedule)."""
    settings, host = cli.settings(), cli.plugins()
    if target.connection_id is not None:
        for s in compute_schedules(cli.database(), host, settings.timezone, tenant_ids=[found.id]):
            if s.connection_id == target.connection_id and s.name == name:
                return s.cron, s.timezone
        return None
    for spec in host.info(target.provider_id).default_schedules:
        if spec.name == name:
            return spec.cron, settings.timezone
    return None


def _switch(
    ctx: typer.Context, tenant: str, provider: str, connection: str | None, name: str, on: bool
) -> None:
    cli = state(ctx)
    found, target = _target(cli, tenant, provider, connection)
    inherited = _inherited(cli, found, target, name)
    set_schedule_enabled(cli.database(), target, name=name, enabled=on, inherited=inherited)
    out.print(f"schedule {name} of {_where(found, target)} {'enabled' if on else 'disabled'}.")


@app.command("disable")
@guarded
def disable(
    ctx: typer.Context,
    tenant: TenantOption,
    provider: ProviderOption,
    name: NameOption,
    connection: ConnectionOption = None,
) -> None:
    """Switch a schedule off for a tenant's provider, or for one connection."""
    _switch(ctx, tenant, provider, connection, name, False)


@app.command("enable")
@guarded
def enable(
    ctx: typer.Context,
    tenant: TenantOption,
    provider: ProviderOption,
    name: NameOption,
    connection: ConnectionOption = None,
) -> None:
    """Switch a schedule back on for a tenant's provider, or for one connection."""
    _switch(ctx, tenant, provider, connection, name, True)
