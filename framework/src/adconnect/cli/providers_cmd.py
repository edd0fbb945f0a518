"""``adconnect providers``: what is installed, and what each tenant has enabled."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from adconnect.cli._state import err, guarded, out, state
from adconnect.tenants import enablements, resolve_tenant, set_provider_enabled

app = typer.Typer(
    help="List installed provider plugins; enable or disable them per tenant.", no_args_is_help=True
)

TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug, name or id.")]


@app.command("list")
@guarded
def list_providers(
    ctx: typer.Context,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Also show whether each is enabled for this tenant.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List installed provider plugins (and the ones that failed to load)."""
    cli = state(ctx)
    host = cli.plugins()
    enabled: dict[str, bool] | None = None
    if tenant is not None:
        db = cli.database()
        found = resolve_tenant(db, tenant)
        enabled = {pid: e.enabled for pid, e in enablements(db, found).items()}
    rows: list[dict[str, Any]] = []
    for pid in host.provider_ids():
        rec = host.records[pid]
        row: dict[str, Any] = {
            "provider_id": pid,
            "display_name": rec.info.display_name,
            "distribution": rec.distribution,
            "version": rec.distribution_version or rec.info.version,
            "contract_version": rec.info.contract_version,
            "auth_kind": rec.info.auth_kind.value,
            "capabilities": sorted(c.value for c in rec.info.capabilities),
        }
        if enabled is not None:
            row["enabled"] = enabled.get(pid, False)
        rows.append(row)
    problems = [p.__dict__ for p in host.problems]
    if as_json:
        out.print_json(json.dumps({"providers": rows, "problems": problems}))
        return
    if not rows:
        out.print("No provider plugins are installed. `adconnect plugin new NAME` starts one.")
    else:
        table = Table(title="Installed providers")
        for column in ("provider", "distribution", "version", "contract"):
            table.add_column(column, no_wrap=True)
        table.add_column("capabilities")
        if enabled is not None:
            table.add_column(f"enabled for {tenant}")
        for row in rows:
            cells = [
                row["provider_id"],
                row["distribution"] or "-",
                row["version"],
                row["contract_version"],
                ", ".join(row["capabilities"]),
            ]
            if enabled is not None:
                cells.append("yes" if row["enabled"] else "no")
            table.add_row(*cells)
        out.print(table)
    if problems:
        err.print(f"{len(problems)} plugin(s) did not load:", style="bold red")
        for p in host.problems:
            where = f" ({p.distribution} {p.version})" if p.distribution else ""
            err.print(f"  {p.name}{where}: {p.kind}: {p.message}", markup=False, highlight=False)
            err.print(f"    what to do: {p.hint}", markup=False, highlight=False)


def _toggle(ctx: typer.Context, provider: str, tenant: str, enabled: bool) -> None:
    cli = state(ctx)
    if enabled:
        cli.plugins().provider(provider)  # only installed providers can be enabled
    db = cli.database()
    found = resolve_tenant(db, tenant)
    set_provider_enabled(db, found, provider, enabled)
    if enabled:
        out.print(f"{provider} is enabled for {found.slug}.")
    else:
        out.print(
            f"{provider} is disabled for {found.slug}: its schedules stop; data and credentials are kept."
        )


@app.command()
@guarded
def enable(
    ctx: typer.Context, provider: Annotated[str, typer.Argument(help="Provider id.")], tenant: TenantOption
) -> None:
    """Enable a provider for a tenant (its schedules start running)."""
    _toggle(ctx, provider, tenant, True)


@app.command()
@guarded
def disable(
    ctx: typer.Context, provider: Annotated[str, typer.Argument(help="Provider id.")], tenant: TenantOption
) -> None:
    """Disable a provider for a tenant; keeps its data and credentials."""
    _toggle(ctx, provider, tenant, False)
