"""Cross-package fixtures: the demo_ads provider (built from the plugin template) and its emulator,
a tenant connected to it through the real OAuth flow, and the sync engine over real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import pytest
from sqlalchemy import text

from adconnect.connections import ConnectionRecord, ConnectionService
from adconnect.db.database import Database
from adconnect.keyring import MasterKeyring, generate_key
from adconnect.plugins import PluginHost, load_plugins
from adconnect.quota import QuotaGovernor
from adconnect.sync.engine import SyncEngine
from adconnect.tenants import Tenant, create_tenant, set_provider_enabled
from adconnect.testing.flows import connect
from adconnect_demo_ads.emulator import DemoAdsEmulator
from adconnect_demo_ads.provider import DemoAdsProvider
from adconnect_demo_ads.settings import DemoAdsSettings

REDIRECT = "http://127.0.0.1:8765/oauth/callback"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
RAW = 'raw."demo_ads__campaign_daily"'


@dataclass
class Demo:
    db: Database
    emulator: DemoAdsEmulator
    settings: DemoAdsSettings
    host: PluginHost
    service: ConnectionService
    engine: SyncEngine
    keyring: MasterKeyring
    clock: list[dt.datetime]

    def tenant(self, name: str, *, account: str = "1001") -> tuple[Tenant, ConnectionRecord]:
        """A tenant with demo_ads enabled and a connection through the real OAuth flow."""
        tenant = create_tenant(self.db, name)
        set_provider_enabled(self.db, tenant, "demo_ads", True)
        record = connect(self.service, tenant.id, "demo_ads", redirect_uri=REDIRECT, account=account)
        return tenant, record

    def sync(self, tenant: Tenant, record: ConnectionRecord, **options: object):
        from adconnect.sync.engine import StreamOptions

        (result,) = self.engine.sync_connection(
            self.service, tenant.id, record.id, options=StreamOptions(**options)
        )  # type: ignore[arg-type]
        return result

    def raw(self, tenant_id: UUID | None = None) -> dict[tuple[str, str, str], tuple[int, int, int]]:
        """The raw table as the admin sees it: (account, campaign, date) -> values."""
        where = "" if tenant_id is None else f"WHERE tenant_id = '{tenant_id}'"
        with self.db.admin() as conn:
            rows = conn.execute(
                text(
                    "SELECT account_id, campaign_id, date, impressions, clicks, spend_micros "
                    f"FROM {RAW} {where}"
                )
            ).all()
        return {
            (r.account_id, r.campaign_id, r.date.isoformat()): (r.impressions, r.clicks, r.spend_micros)
            for r in rows
        }

    def truth(
        self, account: str, start: dt.date, end: dt.date
    ) -> dict[tuple[str, str, str], tuple[int, int, int]]:
        """What the emulator holds for ``account`` on [start, end)."""
        rows = self.emulator.rows(account, start, end - dt.timedelta(days=1))
        return {
            (account, r["campaign_id"], r["date"]): (r["impressions"], r["clicks"], r["spend_micros"])
            for r in rows
        }


@pytest.fixture
def demo(adconnect_db: Database) -> Demo:
    with DemoAdsEmulator(seed=11, redirect_uris=(REDIRECT,), campaigns=4) as emulator:
        settings = DemoAdsSettings(
            api_url=emulator.url,
            client_id=emulator.oauth.client_id,
            client_secret=emulator.oauth.client_secret,
            redirect_uri=REDIRECT,
            page_size=25,
        )
        host = load_plugins(entry_points=False, extra=[DemoAdsProvider(settings)])
        keyring = MasterKeyring([generate_key()])
        service = ConnectionService.create(adconnect_db, host, keyring)
        clock = [NOW]
        engine = SyncEngine(
            adconnect_db,
            host,
            QuotaGovernor(adconnect_db, poll_interval=0.05),
            clock=lambda: clock[0],
            backoff_base=0.01,
            max_attempts=4,
        )
        yield Demo(adconnect_db, emulator, settings, host, service, engine, keyring, clock)
