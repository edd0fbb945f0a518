"""The adconnect pytest plugin (entry point ``pytest11``): a real database for every test.

Fixtures:

* ``adconnect_database`` (session) - a fresh, migrated database (see
  :mod:`adconnect.testing.database`);
* ``adconnect_db`` - the same database, emptied before the test;
* ``adconnect_settings`` - :class:`~adconnect.settings.FrameworkSettings` pointing at it, with a
  fresh data directory and master key;
* ``adconnect_env`` - the same settings exported as ``ADCONNECT_*`` environment variables,
  for tests that run the CLI;
* ``adconnect_cli`` - runs ``adconnect ARGS`` in process against those settings and checks the
  exit code; the logging set-up the CLI installs is undone afterwards.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adconnect.db.database import Database
from adconnect.settings import FrameworkSettings
from adconnect.testing.database import temporary_database, truncate_all


@pytest.fixture(scope="session")
def adconnect_database() -> Iterator[Database]:
    with temporary_database() as db:
        yield db


@pytest.fixture
def adconnect_db(adconnect_database: Database) -> Database:
    truncate_all(adconnect_database)
    return adconnect_database


def _admin_url(db: Database) -> str:
    return db.admin_url.render_as_string(hide_password=False)


@pytest.fixture
def adconnect_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture
def adconnect_settings(
    adconnect_db: Database, tmp_path: Path, adconnect_master_key: str
) -> FrameworkSettings:
    return FrameworkSettings(
        database_url=_admin_url(adconnect_db),
        data_dir=tmp_path / "data",
        master_key=adconnect_master_key,
    )


@pytest.fixture
def adconnect_env(
    adconnect_settings: FrameworkSettings, monkeypatch: pytest.MonkeyPatch
) -> FrameworkSettings:
    for name in list(os.environ):
        if name.startswith("ADCONNECT_") and name != "ADCONNECT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    assert adconnect_settings.database_url is not None
    assert adconnect_settings.master_key is not None
    monkeypatch.setenv("ADCONNECT_DATABASE_URL", adconnect_settings.database_url.get_secret_value())
    monkeypatch.setenv("ADCONNECT_DATA_DIR", str(adconnect_settings.data_dir))
    monkeypatch.setenv("ADCONNECT_MASTER_KEY", adconnect_settings.master_key.get_secret_value())
    return adconnect_settings


@pytest.fixture
def adconnect_cli(adconnect_env: FrameworkSettings) -> Iterator[Callable[..., Any]]:
    """``adconnect_cli(*args, code=0)`` runs the CLI in process and returns typer's result."""
    from typer.testing import CliRunner

    from adconnect.cli import app

    root = logging.getLogger()
    saved = (logging.getLogRecordFactory(), root.handlers[:], root.level)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    yield invoke
    logging.setLogRecordFactory(saved[0])
    root.handlers[:] = saved[1]
    root.setLevel(saved[2])
