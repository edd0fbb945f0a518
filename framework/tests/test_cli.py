"""The ``adconnect`` command line, in process, against the real test database."""

from __future__ import annotations

import json

import pytest

from adconnect.connections import ConnectionService
from adconnect.keyring import MasterKeyring
from adconnect.plugins import load_plugins
from adconnect.tenants import resolve_tenant
from adconnect.vault import Vault

from .conftest import provider_class_name, provider_source


@pytest.fixture
def cli(adconnect_cli):
    return adconnect_cli


@pytest.fixture
def installed(site):
    site(
        "adconnect-alpha-ads",
        "alpha_ads",
        "alpha_ads_plugin",
        provider_source("alpha_ads"),
        target=f"alpha_ads_plugin:{provider_class_name('alpha_ads')}",
    )


def test_tenants_create_and_list(cli):
    created = cli("tenants", "create", "Acme Corp (JM)")
    assert "created tenant acme-corp-jm" in created.stdout
    cli("tenants", "create", "Blue Harbour", "--slug", "blue")
    listed = json.loads(cli("tenants", "list", "--json").stdout)
    assert [(t["slug"], t["name"]) for t in listed] == [
        ("acme-corp-jm", "Acme Corp (JM)"),
        ("blue", "Blue Harbour"),
    ]


def test_errors_are_one_line_with_a_hint_and_no_traceback(cli):
    cli("tenants", "create", "Acme")
    duplicate = cli("tenants", "create", "Acme", code=1)
    assert duplicate.stderr.startswith("error: a tenant named 'Acme'")
    assert "hint:" in duplicate.stderr and "Traceback" not in duplicate.stderr
    unknown = cli("providers", "list", "--tenant", "nobody", code=1)
    assert "error: no tenant 'nobody'" in unknown.stderr
    assert "adconnect tenants list" in unknown.stderr


def test_debug_shows_the_traceback(cli):
    cli("tenants", "create", "Acme")
    result = cli("--debug", "tenants", "create", "Acme", code=1)
    assert "Traceback" in result.stderr and "IntegrityError" not in result.stdout


def test_providers_list_enable_disable(cli, installed):
    cli("tenants", "create", "Acme")
    listed = json.loads(cli("providers", "list", "--json").stdout)
    alpha = next(p for p in listed["providers"] if p["provider_id"] == "alpha_ads")
    assert (alpha["distribution"], alpha["version"], alpha["contract_version"]) == (
        "adconnect-alpha-ads",
        "1.4.0",
        "1.0",
    )
    assert "sync" in alpha["capabilities"]
    assert "enabled" not in alpha

    def enabled() -> bool:
        rows = json.loads(cli("providers", "list", "--tenant", "acme", "--json").stdout)["providers"]
        return next(p for p in rows if p["provider_id"] == "alpha_ads")["enabled"]

    assert enabled() is False
    assert "enabled for acme" in cli("providers", "enable", "alpha_ads", "--tenant", "acme").stdout
    assert enabled() is True
    out = cli("providers", "disable", "alpha_ads", "--tenant", "Acme").stdout
    assert "data and credentials are kept" in out
    assert enabled() is False
    table = cli("providers", "list", "--tenant", "acme").stdout
    assert "alpha_ads" in table and "adconnect-alpha-ads" in table


def test_enabling_an_unknown_provider_is_refused(cli, installed):
    cli("tenants", "create", "Acme")
    result = cli("providers", "enable", "nope_ads", "--tenant", "acme", code=1)
    assert "provider 'nope_ads' is not installed" in result.stderr
    assert "alpha_ads" in result.stderr


def test_disabling_keeps_credentials(cli, installed, adconnect_env, adconnect_db):
    cli("tenants", "create", "Acme")
    cli("providers", "enable", "alpha_ads", "--tenant", "acme")
    tenant = resolve_tenant(adconnect_db, "acme")
    vault = Vault(adconnect_db, MasterKeyring.from_settings(adconnect_env))
    service = ConnectionService(adconnect_db, load_plugins(), vault, None)  # type: ignore[arg-type]
    with adconnect_db.tenant(tenant.id) as conn:
        record = service.ensure(conn, tenant.id, "alpha_ads", "default")
        vault.put_secret(
            conn, tenant_id=tenant.id, connection_id=record.id, field="api_key", value="canary-api-key-123"
        )
    cli("providers", "disable", "alpha_ads", "--tenant", "acme")
    with adconnect_db.tenant(tenant.id) as conn:
        kept = vault.get_secret(conn, tenant_id=tenant.id, connection_id=record.id, field="api_key")
    assert kept is not None and kept.get_secret_value() == "canary-api-key-123"


def test_broken_plugins_are_shown_with_what_to_do(cli, site):
    site(
        "adconnect-broken-ads",
        "broken_ads",
        "broken_ads_plugin",
        "raise RuntimeError('boom')\n",
        target="broken_ads_plugin:X",
    )
    result = cli("providers", "list")
    assert "broken_ads" in result.stderr and "import_error" in result.stderr
    assert "ADCONNECT_DISABLE_PLUGINS=broken_ads" in result.stderr


def test_doctor_passes_on_a_healthy_install_and_explains_problems(cli, site, monkeypatch):
    healthy = json.loads(cli("doctor", "--json").stdout)
    statuses = {c["name"]: c["status"] for c in healthy}
    for name in (
        "settings",
        "database",
        "migrations",
        "app role",
        "row-level security",
        "master key",
        "tenant data keys",
        "loader role",
    ):
        assert statuses[name] == "ok", (name, healthy)
    site(
        "adconnect-future-ads",
        "future_ads",
        "future_ads_plugin",
        provider_source("future_ads", contract="2.0"),
        target=f"future_ads_plugin:{provider_class_name('future_ads')}",
    )
    broken = cli("doctor", "--json", code=1)
    checks = {c["name"]: c for c in json.loads(broken.stdout)}
    future = checks["plugin future_ads"]
    assert future["status"] == "fail" and "incompatible_contract" in future["detail"]
    assert "upgrade" in future["hint"]
    monkeypatch.setenv("ADCONNECT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    unreachable = {c["name"]: c for c in json.loads(cli("doctor", "--json", code=1).stdout)}
    assert unreachable["database"]["status"] == "fail"
    assert "ADCONNECT_DATABASE_URL" in unreachable["database"]["hint"]


def test_db_status_and_migrate(cli):
    status = cli("db", "status").stdout
    assert "schema:" in status and "(newest: 0002)" in status
    assert "up to date" in cli("db", "migrate").stdout


def test_keys_rotate_keeps_every_credential_readable(cli, adconnect_env, adconnect_db, monkeypatch):
    cli("tenants", "create", "Acme")
    tenant = resolve_tenant(adconnect_db, "acme")
    monkeypatch.delenv("ADCONNECT_MASTER_KEY")  # use the key file in the data directory
    settings = adconnect_env.model_copy(update={"master_key": None})
    before = MasterKeyring.from_settings(settings)
    vault = Vault(adconnect_db, before)
    service = ConnectionService(adconnect_db, load_plugins(), vault, None)  # type: ignore[arg-type]
    with adconnect_db.tenant(tenant.id) as conn:
        record = service.ensure(conn, tenant.id, "any", "default")
        vault.put_secret(
            conn,
            tenant_id=tenant.id,
            connection_id=record.id,
            field="refresh_token",
            value="canary-refresh-token-1",
        )
    out = cli("keys", "rotate").stdout
    assert "master key:" in out and "tenant data keys:" in out
    after = MasterKeyring.from_settings(settings)
    assert after.ids != before.ids and before.primary.key_id not in after.ids
    with adconnect_db.tenant(tenant.id) as conn:
        secret = Vault(adconnect_db, after).get_secret(
            conn, tenant_id=tenant.id, connection_id=record.id, field="refresh_token"
        )
    assert secret is not None and secret.get_secret_value() == "canary-refresh-token-1"
    assert "canary-refresh-token-1" not in out
