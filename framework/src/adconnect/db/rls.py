"""Row-level security helpers used by migrations and by the tests that check them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, TextClause, text

from adconnect.db.schema import SCHEMA

#: The transaction-local setting that names the current tenant.
TENANT_SETTING = "adconnect.tenant_id"

CURRENT_TENANT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid
$$
"""


def enable_tenant_rls(execute: Callable[[TextClause], object], table: str, *, schema: str = SCHEMA) -> None:
    """Enable and force RLS on ``schema.table`` with the tenant isolation policy.

    ``execute`` is ``alembic.op.execute`` in migrations or ``Connection.execute``.
    """
    qualified = f'{schema}."{table}"'
    for statement in (
        f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {qualified} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS tenant_isolation ON {qualified}",
        f"CREATE POLICY tenant_isolation ON {qualified} "
        # the sub-select makes the tenant an init-plan: evaluated once per statement, not per row
        f"USING (tenant_id = (SELECT {SCHEMA}.current_tenant())) "
        f"WITH CHECK (tenant_id = (SELECT {SCHEMA}.current_tenant()))",
    ):
        execute(text(statement))


def set_tenant(conn: Connection, tenant_id: object) -> None:
    """Scope the current transaction to one tenant (``SET LOCAL``, pool-safe)."""
    conn.execute(
        text("SELECT set_config(:name, :value, true)"), {"name": TENANT_SETTING, "value": str(tenant_id)}
    )
