"""``adconnect connect`` (the OAuth flow from a terminal) and ``adconnect connections``."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import typer
from rich.table import Table

from adconnect.cli._state import guarded, out, state
from adconnect.cli.sync_cmd import services
from adconnect.connections import ConnectionRecord, ConnectionService
from adconnect.errors import ConfigurationError, NotFoundError
from adconnect.tenants import Tenant as TenantRecord
from adconnect.tenants import resolve_tenant

connect_app = typer.Typer(
    help="Connect a tenant to a provider with OAuth, from the terminal.", no_args_is_help=True
)
connections_app = typer.Typer(
    help="List connections, discover accounts, choose the one to sync.", no_args_is_help=True
)

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug, name or id.")]
Provider = Annotated[str, typer.Option("--provider", "-p", help="Provider id.")]
RedirectUri = Annotated[str, typer.Option(help="The callback URI registered with the provider (exact).")]
Name = Annotated[str, typer.Option("--connection", help="Connection name.")]


@connect_app.command("start")
@guarded
def start(
    ctx: typer.Context,
    tenant: Tenant,
    provider: Provider,
    redirect_uri: RedirectUri,
    flow: Annotated[str, typer.Option(help="OAuth flow name, when the provider has several.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the URL to open in a browser; the state in it is valid once, for 10 minutes."""
    cli = state(ctx)
    service, _ = services(cli)
    found = resolve_tenant(cli.database(), tenant)
    begun = service.start_authorization(
        found.id, provider, redirect_uri=redirect_uri, flow=flow, user_id="cli"
    )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "authorize_url": begun.url,
                    "state": begun.state,
                    "scopes": list(begun.scopes),
                    "ignored_scopes": list(begun.ignored_scopes),
                    "expires_at": begun.expires_at.isoformat(),
                }
            )
        )
        return
    out.print("Open this URL, consent, then pass the URL you are sent back to (or its code and state) to")
    out.print(
        f"`adconnect connect complete --provider {provider} --redirect-uri {redirect_uri} "
        "--callback-url ...`:"
    )
    out.print(begun.url, soft_wrap=True, markup=False, highlight=False)
    if begun.ignored_scopes:
        out.print(f"ignored scopes: {', '.join(begun.ignored_scopes)}")


@connect_app.command("complete")
@guarded
def complete(
    ctx: typer.Context,
    provider: Provider,
    redirect_uri: RedirectUri,
    callback_url: Annotated[
        str | None, typer.Option(help="The full URL the browser was sent back to.")
    ] = None,
    code: Annotated[str | None, typer.Option(help="The authorization code.")] = None,
    oauth_state: Annotated[str | None, typer.Option("--state", help="The state from the callback.")] = None,
    flow: Annotated[str, typer.Option(help="OAuth flow name.")] = "default",
    connection: Name = "default",
) -> None:
    """Exchange the code, validate the credential, and store it sealed in the vault."""
    if callback_url:
        query = parse_qs(urlsplit(callback_url).query)
        if "error" in query:
            raise ConfigurationError(f"the provider refused consent: {query['error'][0]}")
        code = code or next(iter(query.get("code", [])), None)
        oauth_state = oauth_state or next(iter(query.get("state", [])), None)
    if not code or not oauth_state:
        raise ConfigurationError("give --callback-url, or both --code and --state")
    service, _ = services(state(ctx))
    result = service.complete_authorization(
        provider_id=provider,
        state=oauth_state,
        code=code,
        redirect_uri=redirect_uri,
        flow=flow,
        user_id="cli",
        connection_name=connection,
    )
    record = result.connection
    out.print(
        f"connection {record.name} ({provider}): {record.status}"
        + (f" - {record.status_reason}" if record.status_reason else "")
    )
    if result.report.missing_scopes:
        out.print(f"missing permissions: {', '.join(result.report.missing_scopes)}")
    if record.external_account_id is None:
        out.print("next: `adconnect connections discover ...` and `adconnect connections select-account ...`")


def _record(
    ctx: typer.Context, tenant: str, provider: str, connection: str
) -> tuple[ConnectionService, TenantRecord, ConnectionRecord]:
    cli = state(ctx)
    service, _ = services(cli)
    found = resolve_tenant(cli.database(), tenant)
    for record in service.list(found.id, provider):
        if record.name == connection:
            return service, found, record
    raise NotFoundError(
        f"{found.slug} has no {provider} connection named {connection!r}",
        hint="`adconnect connections list --tenant ...` shows them",
    )


@connections_app.command("list")
@guarded
def list_connections(
    ctx: typer.Context,
    tenant: Tenant,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The tenant's connections with status, account and credential state."""
    cli = state(ctx)
    service, _ = services(cli)
    found = resolve_tenant(cli.database(), tenant)
    records = service.list(found.id)
    rows: list[dict[str, Any]] = [
        {
            "id": str(r.id),
            "provider": r.provider_id,
            "name": r.name,
            "account": r.external_account_id,
            "status": r.status,
            "reason": r.status_reason,
            "credential": r.credential_status,
            "token_expires_at": r.token_expires_at.isoformat() if r.token_expires_at else None,
        }
        for r in records
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Connections of {found.slug}")
    for column in ("provider", "name", "account", "status", "credential", "token expires"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["provider"],
            r["name"],
            r["account"] or "-",
            f"{r['status']}" + (f" ({r['reason']})" if r["reason"] else ""),
            r["credential"] or "-",
            (r["token_expires_at"] or "-")[:16],
        )
    out.print(table)


@connections_app.command("discover")
@guarded
def discover(ctx: typer.Context, tenant: Tenant, provider: Provider, connection: Name = "default") -> None:
    """List the accounts (pages, customers, sources) the connection's credential reaches."""
    service, found, record = _record(ctx, tenant, provider, connection)
    token = service.fresh_token(record)
    if token is None:
        raise ConfigurationError(
            "the connection has no credential", hint="run `adconnect connect start` first"
        )
    assets = service.host.discover_assets(provider, token)
    table = Table(title=f"{provider} assets reachable by {found.slug}/{record.name}")
    for column in ("id", "kind", "name", "currency", "time zone"):
        table.add_column(column)
    for a in assets:
        table.add_row(a.asset_id, a.kind, a.name, a.currency or "-", a.timezone or "-")
    out.print(table)


@connections_app.command("select-account")
@guarded
def select_account(
    ctx: typer.Context,
    tenant: Tenant,
    provider: Provider,
    account: Annotated[str, typer.Option(help="The discovered asset id to sync.")],
    connection: Name = "default",
) -> None:
    """Choose the account this connection syncs."""
    service, found, record = _record(ctx, tenant, provider, connection)
    token = service.fresh_token(record)
    if token is not None:
        known = {a.asset_id for a in service.host.discover_assets(provider, token)}
        if known and account not in known:
            raise ConfigurationError(
                f"{account!r} is not reachable by this credential",
                hint=f"reachable: {', '.join(sorted(known))}",
            )
    service.select_account(found.id, record.id, account)
    out.print(f"{found.slug}/{record.name} ({provider}) now syncs account {account}")


@connections_app.command("set-lookback")
@guarded
def set_lookback(
    ctx: typer.Context,
    tenant: Tenant,
    provider: Provider,
    days: Annotated[
        int | None, typer.Option(help="Days every stream re-reads each run; omit to use the defaults.", min=0)
    ] = None,
    connection: Name = "default",
) -> None:
    """Override the restatement lookback for one connection (within the provider's maximum)."""
    service, found, record = _record(ctx, tenant, provider, connection)
    service.set_lookback(found.id, record.id, days)
    if days is None:
        out.print(f"{found.slug}/{record.name} ({provider}) uses each stream's default lookback again")
    else:
        out.print(f"{found.slug}/{record.name} ({provider}) re-reads the last {days} day(s) every run")
