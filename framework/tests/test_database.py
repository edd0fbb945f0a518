"""The storage layer against a real PostgreSQL: migrations, roles, row-level security."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from adconnect.db import SCHEMA, TENANT_TABLES, metadata


def test_migrations_reach_head_and_match_the_models(adconnect_db):
    assert adconnect_db.current_revision() == adconnect_db.head_revision()
    with adconnect_db.admin() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "version_table_schema": SCHEMA,
                "include_name": lambda name, type_, parent: type_ != "schema" or name == SCHEMA,
            },
        )
        assert compare_metadata(ctx, metadata) == []


def test_migrate_is_idempotent(adconnect_db):
    before, after = adconnect_db.migrate()
    assert before == after == adconnect_db.head_revision()


def test_app_role_owns_nothing_and_cannot_bypass_rls(adconnect_db):
    with adconnect_db.admin() as conn:
        role = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"),
            {"r": adconnect_db.app_role},
        ).one()
        assert (role.rolsuper, role.rolbypassrls) == (False, False)
        owned = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = :s AND tableowner = :r"),
            {"s": SCHEMA, "r": adconnect_db.app_role},
        ).scalar_one()
        assert owned == 0


def test_every_tenant_table_forces_row_level_security(adconnect_db):
    with adconnect_db.admin() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind = 'r'"
            ),
            {"s": SCHEMA},
        ).all()
    flags = {r.relname: (r.relrowsecurity, r.relforcerowsecurity) for r in rows}
    assert {t.name for t in TENANT_TABLES} <= set(flags)
    for table in TENANT_TABLES:
        assert flags[table.name] == (True, True), table.name
