"""``adconnect keys``: rotate the master key and tenant data keys without downtime."""

from __future__ import annotations

from typing import Annotated

import typer

from adconnect.cli._state import guarded, out, state
from adconnect.keyring import MasterKeyring
from adconnect.tenants import resolve_tenant
from adconnect.vault import Vault

app = typer.Typer(help="Master key and tenant data keys.", no_args_is_help=True)


@app.command()
@guarded
def rotate(
    ctx: typer.Context,
    master: Annotated[bool, typer.Option("--master", help="Rotate the master key only.")] = False,
    tenant_keys: Annotated[bool, typer.Option("--tenant-keys", help="Rotate tenant data keys only.")] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Rotate this tenant's data key only.")
    ] = None,
) -> None:
    """Rotate keys while the platform keeps running; every credential still decrypts.

    With the key file (the default), --master creates a new master key, re-wraps every tenant
    data key and drops the old key. With ADCONNECT_MASTER_KEY, put the new key first in the
    variable and run --master to re-wrap; the report says which old keys can be removed.
    Tenant data keys are replaced and every credential is re-encrypted in small batches.
    """
    cli = state(ctx)
    settings = cli.settings()
    db = cli.database()
    both = not master and not tenant_keys
    if master or (both and tenant is None):
        if settings.master_key is None:
            report = Vault.rotate_master_key_file(db, settings)
        else:
            report = Vault(db, MasterKeyring.from_settings(settings)).rotate_master_key()
        out.print(f"master key: {report.summary()}")
    if tenant_keys or both:
        vault = Vault(db, MasterKeyring.from_settings(settings))
        tenant_id = resolve_tenant(db, tenant).id if tenant else None
        report = vault.rotate_tenant_keys(tenant_id)
        out.print(f"tenant data keys: {report.summary()}")
