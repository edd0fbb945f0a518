"""Tenants and per-tenant provider enablement.

A provider installed on the machine does nothing for a tenant until an operator enables it
for that tenant. Disabling it stops its schedules; data and credentials are kept, and
enabling it again resumes from the saved state.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from adconnect.db.database import Database
from adconnect.db.schema import provider_enablements, tenants
from adconnect.errors import ConfigurationError, NotFoundError

__all__ = [
    "Enablement",
    "Tenant",
    "create_tenant",
    "enablements",
    "list_tenants",
    "resolve_tenant",
    "set_provider_enabled",
    "slugify",
]


@dataclass(frozen=True)
class Tenant:
    id: UUID
    slug: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Enablement:
    provider_id: str
    enabled: bool
    changed_at: datetime
    changed_by: str


def slugify(name: str) -> str:
    """``"Acme Corp (JM)"`` -> ``"acme-corp-jm"``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if not slug:
        raise ConfigurationError(
            f"cannot derive a slug from tenant name {name!r}", hint="pass --slug with letters or digits"
        )
    return slug[:63].rstrip("-")


def _tenant(row: object) -> Tenant:
    return Tenant(row.id, row.slug, row.name, row.created_at)  # type: ignore[attr-defined]


def create_tenant(db: Database, name: str, *, slug: str | None = None) -> Tenant:
    """Create a tenant; its name and slug must be unused."""
    name = name.strip()
    if not name:
        raise ConfigurationError("a tenant needs a name")
    slug = slugify(slug or name)
    try:
        with db.platform() as conn:
            row = conn.execute(tenants.insert().values(name=name, slug=slug).returning(*tenants.c)).one()
    except IntegrityError:
        raise ConfigurationError(
            f"a tenant named {name!r} or with slug {slug!r} already exists",
            hint="choose another name, or pass --slug",
        ) from None
    return _tenant(row)


def list_tenants(db: Database) -> list[Tenant]:
    with db.platform() as conn:
        rows = conn.execute(select(tenants).order_by(tenants.c.name)).all()
    return [_tenant(r) for r in rows]


def resolve_tenant(db: Database, ref: str) -> Tenant:
    """Find a tenant by slug, id or (case-insensitive) name."""
    ref = ref.strip()
    conditions = [tenants.c.slug == ref.lower(), func.lower(tenants.c.name) == ref.lower()]
    with contextlib.suppress(ValueError):
        conditions.append(tenants.c.id == UUID(ref))
    with db.platform() as conn:
        row = conn.execute(select(tenants).where(or_(*conditions))).first()
    if row is None:
        raise NotFoundError(
            f"no tenant {ref!r}",
            hint="`adconnect tenants list` shows tenants; `adconnect tenants create NAME` adds one",
        )
    return _tenant(row)


def set_provider_enabled(
    db: Database, tenant: Tenant, provider_id: str, enabled: bool, *, changed_by: str = "cli"
) -> Enablement:
    """Enable or disable ``provider_id`` for ``tenant``. Keeps data and credentials."""
    with db.tenant(tenant.id) as conn:
        stmt = insert(provider_enablements).values(
            tenant_id=tenant.id, provider_id=provider_id, enabled=enabled, changed_by=changed_by
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[provider_enablements.c.tenant_id, provider_enablements.c.provider_id],
            set_={"enabled": enabled, "changed_by": changed_by, "changed_at": func.now()},
        )
        row = conn.execute(stmt.returning(*provider_enablements.c)).one()
    return Enablement(row.provider_id, row.enabled, row.changed_at, row.changed_by)


def enablements(db: Database, tenant: Tenant) -> dict[str, Enablement]:
    """Every provider this tenant has ever enabled or disabled, by provider id."""
    with db.tenant(tenant.id) as conn:
        rows = conn.execute(select(provider_enablements)).all()
    return {r.provider_id: Enablement(r.provider_id, r.enabled, r.changed_at, r.changed_by) for r in rows}
