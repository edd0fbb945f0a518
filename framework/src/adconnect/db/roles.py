"""The application role: owns nothing, never bypasses row-level security.

Run after every migration (idempotent): creates the role when missing and grants it DML on
the adconnect schema. Tables stay owned by the admin role that ran the migrations, so the
application is always subject to the (forced) row-level security policies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from adconnect.db.schema import SCHEMA
from adconnect.errors import ConfigurationError

if TYPE_CHECKING:
    from adconnect.db.database import Database


def _quote(conn: Connection, identifier: str) -> str:
    return str(conn.execute(text("SELECT quote_ident(:i)"), {"i": identifier}).scalar_one())


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
    ):
        conn.execute(text(statement))
