"""``adconnect doctor``: check an installation and say, for each problem, what to do.

Checks settings, database reachability, migration state, the application role and
row-level security, the master key (and that every tenant data key is wrapped by a key we
have), and every installed plugin (import errors, contract violations, version mismatch,
incomplete settings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import text

from adconnect.db.database import Database, describe_url, open_database
from adconnect.db.schema import RAW_SCHEMA, SCHEMA, TENANT_TABLES
from adconnect.errors import AdconnectError
from adconnect.plugins import PluginHost, load_plugins
from adconnect.provider import settings_problems
from adconnect.settings import FrameworkSettings

__all__ = ["Check", "run_checks"]

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str = ""


def run_checks(settings_factory: Callable[[], FrameworkSettings] = FrameworkSettings) -> list[Check]:
    """Run every check; a failing check never stops the others that do not depend on it."""
    return list(_checks(settings_factory))


def _checks(settings_factory: Callable[[], FrameworkSettings]) -> Iterator[Check]:
    try:
        settings = settings_factory()
    except ValidationError as exc:
        yield Check(
            "settings",
            "fail",
            settings_problems(exc),
            "fix the ADCONNECT_* environment variables named above",
        )
        return
    yield Check("settings", "ok", f"data directory {settings.data_dir}, time zone {settings.timezone}")
    yield from _key_checks(settings, None)
    db: Database | None = None
    try:
        db = open_database(settings)
        db.check_reachable()
        yield Check("database", "ok", f"{describe_url(db.app_url)}" + (" (embedded)" if db.embedded else ""))
    except AdconnectError as exc:
        yield Check("database", "fail", exc.user_message, exc.hint or "")
        if db is not None:
            db.close()
        db = None
    if db is not None:
        try:
            yield from _database_checks(db)
            yield from _key_checks(settings, db)
        finally:
            db.close()
    yield from _plugin_checks(load_plugins(disabled=settings.disabled_plugins))


def _database_checks(db: Database) -> Iterator[Check]:
    current, head = db.current_revision(), db.head_revision()
    if current != head:
        yield Check(
            "migrations",
            "fail",
            f"schema at {current or 'nothing'}, newest is {head}",
            "run `adconnect db migrate`",
        )
        return
    yield Check("migrations", "ok", f"schema at {head}")
    with db.admin() as conn:
        role = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": db.app_role}
        ).first()
        owned = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = :s AND tableowner = :r"),
            {"s": SCHEMA, "r": db.app_role},
        ).scalar_one()
        unforced = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = ANY(:t) "
                    "AND NOT (c.relrowsecurity AND c.relforcerowsecurity)"
                ),
                {"s": SCHEMA, "t": [t.name for t in TENANT_TABLES]},
            )
            .scalars()
            .all()
        )
    if role is None or role.rolsuper or role.rolbypassrls or owned:
        yield Check(
            "app role",
            "fail",
            f"role {db.app_role} is missing, a superuser, bypasses RLS or owns tables",
            "run `adconnect db migrate`; use a plain role in ADCONNECT_APP_DATABASE_URL",
        )
    else:
        yield Check("app role", "ok", f"{db.app_role} owns nothing and is subject to row-level security")
    with db.admin() as conn:
        raw_unforced = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relkind = 'r' "
                    "AND NOT (c.relrowsecurity AND c.relforcerowsecurity)"
                ),
                {"s": RAW_SCHEMA},
            )
            .scalars()
            .all()
        )
    if unforced or raw_unforced:
        yield Check(
            "row-level security",
            "fail",
            f"not forced on: {', '.join([*unforced, *raw_unforced])}",
            "run `adconnect db migrate`",
        )
    else:
        yield Check(
            "row-level security",
            "ok",
            f"enabled and forced on {len(TENANT_TABLES)} tenant tables and every raw table",
        )
    if db.loader_role:
        yield Check("loader role", "ok", f"{db.loader_role}: COPY into new windows at full speed")
    else:
        yield Check(
            "loader role",
            "warn",
            "no BYPASSRLS loader role: raw loads go through a staging table (correct, slower)",
            "run `adconnect db migrate` once with a superuser ADCONNECT_DATABASE_URL to create it",
        )


def _key_checks(settings: FrameworkSettings, db: Database | None) -> Iterator[Check]:
    from adconnect.keyring import MasterKeyring

    try:
        keyring = MasterKeyring.from_settings(settings)
    except AdconnectError as exc:
        if db is None:
            yield Check("master key", "fail", exc.user_message, exc.hint or "")
        return
    if db is None:
        source = "ADCONNECT_MASTER_KEY" if settings.master_key else str(settings.master_key_file)
        yield Check("master key", "ok", f"{len(keyring.ids)} key(s) from {source}")
        return
    with db.admin() as conn:
        used = set(
            conn.execute(text(f"SELECT DISTINCT master_key_id FROM {SCHEMA}.tenant_keys")).scalars().all()
        )
    unknown = sorted(used - set(keyring.ids))
    if unknown:
        yield Check(
            "tenant data keys",
            "fail",
            f"data keys are wrapped by master key(s) {', '.join(unknown)} that are not configured",
            "restore the previous master key (newest first in ADCONNECT_MASTER_KEY or the key "
            "file), then run `adconnect keys rotate --master`",
        )
    else:
        yield Check("tenant data keys", "ok", "every tenant data key is wrapped by a configured master key")


def _plugin_checks(host: PluginHost) -> Iterator[Check]:
    if not host.provider_ids() and not host.problems:
        yield Check(
            "plugins",
            "warn",
            "no provider plugins installed",
            "install one (pip install -e plugins/<name>) or `adconnect plugin new NAME`",
        )
    for problem in host.problems:
        status: Status = "warn" if problem.kind == "disabled" else "fail"
        where = f" ({problem.distribution} {problem.version})" if problem.distribution else ""
        yield Check(
            f"plugin {problem.name}", status, f"{problem.kind}{where}: {problem.message}", problem.hint
        )
    for pid in host.provider_ids():
        record = host.records[pid]
        model = record.info.settings_model
        if model is not None:
            try:
                model()
            except ValidationError as exc:
                yield Check(
                    f"plugin {pid}",
                    "warn",
                    f"loaded, but its settings are incomplete: {settings_problems(exc)}",
                    f"set the ADCONNECT_{pid.upper()}_* variables (see its README)",
                )
                continue
        yield Check(
            f"plugin {pid}",
            "ok",
            f"{record.distribution or 'registered'} {record.distribution_version or record.info.version}, "
            f"contract {record.info.contract_version}",
        )
