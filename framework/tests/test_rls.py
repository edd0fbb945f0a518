"""Row-level security: a tenant's transaction sees none of another tenant's rows, in EVERY
tenant table, even when the query has no WHERE clause at all.

Rows are generated from the table metadata, so a new tenant table is covered automatically
(and the seeding assertion fails loudly if it cannot be seeded)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import DBAPIError

from adconnect.db.schema import TENANT_TABLES, provider_enablements, tenants

# Values the generic generator cannot guess (check constraints without defaults).
OVERRIDES = {("sync_runs", "status"): "running"}


def _value(table: Table, column, tenant_id, refs):
    if column.name == "tenant_id":
        return tenant_id
    if column.name in refs:
        return refs[column.name]
    if (table.name, column.name) in OVERRIDES:
        return OVERRIDES[(table.name, column.name)]
    kind = column.type
    if isinstance(kind, UUID):
        return uuid.uuid4()
    if isinstance(kind, ARRAY):
        return ["x"]
    if isinstance(kind, JSONB):
        return {"k": "v"}
    if isinstance(kind, DateTime):
        return datetime.now(UTC) + timedelta(hours=1)
    if isinstance(kind, Boolean):
        return True
    if isinstance(kind, (Integer, BigInteger)):
        return 1
    if isinstance(kind, Float):
        return 1.0
    if isinstance(kind, LargeBinary):
        return b"\x00" * 12
    if isinstance(kind, Text):
        return f"{table.name}-{str(tenant_id)[:8]}"
    raise AssertionError(f"no generator for {table.name}.{column.name} ({kind})")


def _seed(db, tenant_id) -> None:
    refs: dict[str, object] = {"key_version": 1}
    with db.tenant(tenant_id) as conn:
        for table in TENANT_TABLES:
            values = {
                c.name: _value(table, c, tenant_id, refs)
                for c in table.columns
                if not (c.server_default is not None or c.nullable or c.identity is not None)
                or c.name in refs
                or c.name == "tenant_id"
            }
            if table.name == "tenant_keys":
                values["version"] = 1
            stmt = insert(table).values(**values)
            if "id" in table.c:
                row_id = conn.execute(stmt.returning(table.c.id)).scalar_one()
                if table.name == "connections":
                    refs["connection_id"] = row_id
            else:
                conn.execute(stmt)


@pytest.fixture
def two_tenants(adconnect_db):
    ids = []
    with adconnect_db.platform() as conn:
        for name in ("alpha", "beta"):
            ids.append(
                conn.execute(
                    insert(tenants).values(name=name, slug=name).returning(tenants.c.id)
                ).scalar_one()
            )
    for tenant_id in ids:
        _seed(adconnect_db, tenant_id)
    return ids


def test_every_tenant_table_is_seeded_for_both_tenants(adconnect_db, two_tenants):
    with adconnect_db.admin() as conn:  # the admin role is a superuser: it sees everything
        for table in TENANT_TABLES:
            per_tenant = dict(
                conn.execute(select(table.c.tenant_id, func.count()).group_by(table.c.tenant_id)).all()
            )
            assert per_tenant == {two_tenants[0]: 1, two_tenants[1]: 1}, table.name


def test_a_tenant_transaction_sees_only_its_own_rows_without_any_where_clause(adconnect_db, two_tenants):
    alpha, beta = two_tenants
    with adconnect_db.tenant(alpha) as conn:
        for table in TENANT_TABLES:
            owners = conn.execute(text(f"SELECT tenant_id FROM {table.schema}.{table.name}")).scalars().all()
            assert owners == [alpha], table.name
            foreign = conn.execute(
                select(func.count()).select_from(table).where(table.c.tenant_id == beta)
            ).scalar_one()
            assert foreign == 0, table.name


def test_without_a_tenant_no_tenant_rows_are_visible(adconnect_db, two_tenants):
    with adconnect_db.platform() as conn:
        for table in TENANT_TABLES:
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0, table.name


def test_a_tenant_cannot_write_or_change_another_tenants_rows(adconnect_db, two_tenants):
    alpha, beta = two_tenants
    with adconnect_db.tenant(alpha) as conn:
        for table in TENANT_TABLES:
            assert (
                conn.execute(update(table).where(table.c.tenant_id == beta).values(tenant_id=beta)).rowcount
                == 0
            ), table.name
            assert conn.execute(delete(table).where(table.c.tenant_id == beta)).rowcount == 0, table.name
    with pytest.raises(DBAPIError, match="row-level security"), adconnect_db.tenant(alpha) as conn:
        conn.execute(insert(provider_enablements).values(tenant_id=beta, provider_id="x", enabled=True))
    with pytest.raises(DBAPIError, match="row-level security"), adconnect_db.tenant(alpha) as conn:
        conn.execute(update(provider_enablements).values(tenant_id=beta))
    with adconnect_db.admin() as conn:
        assert conn.execute(select(func.count()).select_from(provider_enablements)).scalar_one() == 2
