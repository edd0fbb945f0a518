"""``adconnect tenants``: create and list tenants (an agency's clients)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from adconnect.cli._state import guarded, out, state
from adconnect.tenants import create_tenant, list_tenants

app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)


@app.command()
@guarded
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Display name, e.g. 'Acme Corp'.")],
    slug: Annotated[
        str | None, typer.Option(help="Short id used by --tenant (default: from the name).")
    ] = None,
) -> None:
    """Create a tenant."""
    tenant = create_tenant(state(ctx).database(), name, slug=slug)
    out.print(f"created tenant {tenant.slug} ({tenant.name}), id {tenant.id}")


@app.command("list")
@guarded
def list_(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List tenants."""
    tenants = list_tenants(state(ctx).database())
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {"id": str(t.id), "slug": t.slug, "name": t.name, "created_at": t.created_at.isoformat()}
                    for t in tenants
                ]
            )
        )
        return
    if not tenants:
        out.print("No tenants yet. `adconnect tenants create NAME` adds one.")
        return
    table = Table(title="Tenants")
    for column in ("slug", "name", "id", "created"):
        table.add_column(column)
    for t in tenants:
        table.add_row(t.slug, t.name, str(t.id), t.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)
