"""A real PostgreSQL for tests: a fresh, migrated database per test session.

The server is the one named by ``ADCONNECT_TEST_DATABASE_URL`` (a role that may create
databases and roles, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) or, when that is
unset, an embedded server started in a temporary directory. Each session creates its own
database ``adconnect_test_<random>`` and drops it at the end, so concurrent runs on one server
never see each other.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from adconnect.db.database import Database
from adconnect.db.embedded import EmbeddedPostgres
from adconnect.db.schema import metadata

__all__ = ["TEST_DATABASE_ENV", "temporary_database", "truncate_all"]

TEST_DATABASE_ENV = "ADCONNECT_TEST_DATABASE_URL"
APP_ROLE = "adconnect_app"


def _psycopg_params(url: URL) -> dict[str, object]:
    params: dict[str, object] = {"dbname": url.database or "postgres", "user": url.username}
    if url.host:
        params["host"] = url.host
    elif "host" in url.query:
        params["host"] = url.query["host"]
    if url.port:
        params["port"] = url.port
    if url.password:
        params["password"] = url.password
    return params


@contextmanager
def _server_url() -> Iterator[URL]:
    configured = os.environ.get(TEST_DATABASE_ENV)
    if configured:
        yield make_url(configured).set(drivername="postgresql+psycopg")
        return
    with tempfile.TemporaryDirectory(prefix="adconnect-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata", cleanup="delete")
        url = server.start()
        try:
            yield url
        finally:
            server.stop()


@contextmanager
def temporary_database(app_role: str = APP_ROLE) -> Iterator[Database]:
    """Create, migrate, yield and finally drop a database on the test server."""
    with _server_url() as server:
        name = f"adconnect_test_{secrets.token_hex(4)}"
        maintenance = _psycopg_params(server)
        with psycopg.connect(**maintenance, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'CREATE DATABASE "{name}"')
        admin_url = server.set(database=name)
        db = Database(admin_url, admin_url.set(username=app_role, password=None), app_role=app_role)
        try:
            db.migrate()
            yield db
        finally:
            db.close()
            with psycopg.connect(**maintenance, autocommit=True) as conn:  # type: ignore[arg-type]
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_all(db: Database) -> None:
    """Empty every adconnect table, every raw table and the job queue (as the admin role), keeping
    the schemas."""
    from adconnect.scheduling.queue import QUEUE_SCHEMA, QUEUE_TABLES

    names = [f"{t.schema}.{t.name}" for t in metadata.sorted_tables]
    with db.admin() as conn:
        raw = conn.execute(text("SELECT format('raw.%I', tablename) FROM pg_tables WHERE schemaname = 'raw'"))
        names += list(raw.scalars())
        queue = conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{QUEUE_SCHEMA}.procrastinate_jobs"})
        if queue.scalar() is not None:
            names += [f"{QUEUE_SCHEMA}.{t}" for t in QUEUE_TABLES]
        conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
