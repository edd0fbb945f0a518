"""Connections to PostgreSQL: an admin engine for migrations, an app engine for everything else.

The app engine connects as a role that owns no table and is subject to row-level security.
Work on tenant data happens in :meth:`Database.tenant` transactions, which set the tenant for
that transaction only; :meth:`Database.platform` transactions see platform tables (tenants,
metric registry) and no tenant rows at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from adconnect.db.embedded import EmbeddedPostgres
from adconnect.db.rls import set_tenant
from adconnect.db.schema import SCHEMA
from adconnect.errors import ConfigurationError
from adconnect.settings import FrameworkSettings

__all__ = ["Database", "describe_url", "open_database"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x0ADC0DE1  # advisory lock id: one migrator at a time


def describe_url(url: URL) -> str:
    """A URL safe to print: the password is never shown."""
    return url.render_as_string(hide_password=True)


class Database:
    """Engines and transactions for one adconnect database."""

    def __init__(
        self,
        admin_url: URL,
        app_url: URL,
        *,
        embedded: EmbeddedPostgres | None = None,
        app_role: str = "adconnect_app",
    ) -> None:
        self.admin_url = admin_url
        self.app_url = app_url
        self.app_role = app_url.username or app_role
        self.embedded = embedded
        self._admin: Engine | None = None
        self._loader_role: str | None = None
        self._app: Engine | None = None

    # --- engines ---------------------------------------------------------------------------

    @property
    def admin_engine(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(self.admin_url, pool_pre_ping=True, pool_size=2)
        return self._admin

    @property
    def app_engine(self) -> Engine:
        if self._app is None:
            self._app = create_engine(self.app_url, pool_pre_ping=True, pool_size=5)
        return self._app

    def close(self) -> None:
        for engine in (self._admin, self._app):
            if engine is not None:
                engine.dispose()
        self._admin = self._app = None
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def tenant(self, tenant_id: UUID | str) -> Iterator[Connection]:
        """A transaction that sees and writes only ``tenant_id``'s rows."""
        with self.app_engine.begin() as conn:
            set_tenant(conn, UUID(str(tenant_id)))
            yield conn

    @contextmanager
    def platform(self) -> Iterator[Connection]:
        """A transaction with no tenant: platform tables only (RLS hides every tenant row)."""
        with self.app_engine.begin() as conn:
            yield conn

    @contextmanager
    def admin(self) -> Iterator[Connection]:
        """A transaction as the admin role (migrations, role management, tests)."""
        with self.admin_engine.begin() as conn:
            yield conn

    # --- migrations ------------------------------------------------------------------------

    def _alembic_config(self, conn: Connection) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    def head_revision(self) -> str | None:
        script = ScriptDirectory(str(MIGRATIONS))
        return script.get_current_head()

    def current_revision(self) -> str | None:
        with self.app_engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table_schema": SCHEMA})
            return ctx.get_current_revision()

    def migrate(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest revision and (re)apply the app role's grants.

        Also creates the job queue's schema (procrastinate) when it is missing.

        Safe to run from several processes at once: migrations take an advisory lock.
        Returns ``(revision before, revision after)``.
        """
        from adconnect.db.roles import ensure_app_role, ensure_loader_role
        from adconnect.scheduling.queue import ensure_queue_schema

        with self.admin_engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                conn.commit()
                before = MigrationContext.configure(
                    conn, opts={"version_table_schema": SCHEMA}
                ).get_current_revision()
                conn.commit()
                command.upgrade(self._alembic_config(conn), "head")
                conn.commit()
                ensure_app_role(conn, self)
                conn.commit()
                ensure_loader_role(conn, self)
                conn.commit()
                ensure_queue_schema(conn, self.app_role)
                conn.commit()
                after = MigrationContext.configure(
                    conn, opts={"version_table_schema": SCHEMA}
                ).get_current_revision()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
        if before != after:
            log.info("database migrated from %s to %s", before or "empty", after)
        return before, after

    @property
    def loader_role(self) -> str | None:
        """The BYPASSRLS role the app may switch to for COPY into raw tables, if there is one."""
        if self._loader_role is None:
            from adconnect.db.roles import loader_role_name

            name = loader_role_name(self.app_role)
            with self.app_engine.connect() as conn:
                usable = conn.execute(
                    text(
                        "SELECT r.rolbypassrls AND pg_has_role(current_user, r.oid, 'MEMBER') "
                        "FROM pg_roles r WHERE r.rolname = :r"
                    ),
                    {"r": name},
                ).scalar()
            self._loader_role = name if usable else ""
        return self._loader_role or None

    def check_reachable(self, *, admin: bool = False) -> None:
        """Raise :class:`ConfigurationError` with a hint when the app (or admin) role cannot connect."""
        engine, url = (self.admin_engine, self.admin_url) if admin else (self.app_engine, self.app_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise ConfigurationError(
                f"cannot connect to {describe_url(url)}: {reason}",
                hint="check ADCONNECT_DATABASE_URL / ADCONNECT_APP_DATABASE_URL and that the "
                "server is running; run `adconnect doctor`",
            ) from None


def _normalise(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigurationError(
            f"only PostgreSQL is supported, got {parsed.drivername!r}",
            hint="set ADCONNECT_DATABASE_URL=postgresql://user@host/db",
        )
    return parsed


def open_database(settings: FrameworkSettings, *, migrate: bool = False, **extra: Any) -> Database:
    """Open the configured database, starting the embedded server when none is configured."""
    embedded: EmbeddedPostgres | None = None
    if settings.database_url is not None:
        try:
            admin_url = _normalise(settings.database_url.get_secret_value())
        except Exception as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(
                "ADCONNECT_DATABASE_URL is not a valid URL",
                hint="use postgresql://user:password@host:5432/dbname",
            ) from None
    else:
        embedded = EmbeddedPostgres(settings.embedded_pgdata)
        admin_url = embedded.start()
    if settings.app_database_url is not None:
        app_url = _normalise(settings.app_database_url.get_secret_value())
    else:
        app_url = admin_url.set(username=settings.app_role, password=None)
    db = Database(admin_url, app_url, embedded=embedded, app_role=settings.app_role, **extra)
    if migrate:
        try:
            db.migrate()
        except Exception:
            db.close()
            raise
    return db
