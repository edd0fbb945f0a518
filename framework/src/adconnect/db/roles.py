"""The application role (owns nothing, never bypasses row-level security) and the loader role.

Run after every migration (idempotent): creates the application role when missing and grants
it DML on the adconnect and raw schemas. Tables stay owned by the admin role that ran the
migrations, so the application is always subject to the (forced) row-level security policies.

PostgreSQL refuses ``COPY FROM`` into a table with row-level security for a role subject to
it. The sync engine therefore switches, for the ``COPY`` statement only, to the *loader role*
``<app role>_loader``: NOLOGIN, BYPASSRLS, and granted nothing but INSERT on raw tables - it
cannot read a single row. Creating a BYPASSRLS role needs a superuser (or, on PostgreSQL 16+,
a role that has BYPASSRLS itself); where the admin role cannot, the loader role is skipped and
the engine loads through a staging table instead (slower, same results).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from adconnect.db.schema import RAW_SCHEMA, SCHEMA
from adconnect.errors import ConfigurationError

if TYPE_CHECKING:
    from adconnect.db.database import Database


def _quote(conn: Connection, identifier: str) -> str:
    return str(conn.execute(text("SELECT quote_ident(:i)"), {"i": identifier}).scalar_one())


def loader_role_name(app_role: str) -> str:
    return f"{app_role}_loader"


def ensure_loader_role(conn: Connection, db: Database) -> bool:
    """Create the loader role when possible; True when the app role can use it."""
    name = loader_role_name(db.app_role)
    role, app = _quote(conn, name), _quote(conn, db.app_role)
    exists = conn.execute(text("SELECT rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": name}).first()
    if exists is None:
        allowed = conn.execute(
            text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
        if not allowed:
            return False
        conn.execute(text(f"CREATE ROLE {role} NOLOGIN NOINHERIT BYPASSRLS"))
    elif not exists.rolbypassrls:
        return False
    for statement in (
        f"GRANT {role} TO {app}",
        f"GRANT USAGE ON SCHEMA {RAW_SCHEMA} TO {role}",
        f"GRANT INSERT ON ALL TABLES IN SCHEMA {RAW_SCHEMA} TO {role}",
    ):
        conn.execute(text(statement))
    return True


def ensure_app_role(conn: Connection, db: Database) -> None:
    role = _quote(conn, db.app_role)
    exists = conn.execute(
        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": db.app_role}
    ).first()
    if exists is None:
        password = db.app_url.password
        clause = ""
        if password:
            literal = conn.execute(text("SELECT quote_literal(:p)"), {"p": str(password)}).scalar_one()
            clause = f" PASSWORD {literal}"
        conn.execute(
            text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE{clause}")
        )
    elif exists.rolsuper or exists.rolbypassrls:
        raise ConfigurationError(
            f"the application role {db.app_role!r} is a superuser or bypasses row-level security",
            hint="use a plain role for ADCONNECT_APP_DATABASE_URL (NOSUPERUSER NOBYPASSRLS)",
        )
    database = _quote(conn, str(conn.execute(text("SELECT current_database()")).scalar_one()))
    for statement in (
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} TO {role}",
        f"REVOKE INSERT, UPDATE, DELETE ON {SCHEMA}.alembic_version FROM {role}",
        # raw tables are created by the sync engine (as the admin role) and granted on creation
        f"GRANT USAGE ON SCHEMA {RAW_SCHEMA} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {RAW_SCHEMA} TO {role}",
    ):
        conn.execute(text(statement))
