"""Effective schedules: what should run when, computed from the database and the plugins.

For every tenant, every connection of a provider installed here, the schedules are the
provider's ``default_schedules``, overridden by name by ``schedules`` rows: a row for the
connection (``connection_id`` set) beats a tenant-wide row for the provider (``connection_id``
null), which beats the default. A row with a new name adds a schedule; ``enabled = false``
switches one off. A row's ``streams`` null means "as inherited" (the default's streams, or every
stream). Cron expressions are evaluated in the row's time zone, the platform's for defaults.

A schedule is *active* (the leader runs it) when the provider is enabled for the tenant, the
connection's status is ``active``, an account is selected and the schedule is enabled; otherwise
:attr:`EffectiveSchedule.inactive_reason` says why not, for ``adconnect schedules list``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Connection, select

from adconnect.db.database import Database
from adconnect.db.rls import set_tenant
from adconnect.db.schema import connections, provider_enablements, schedule_fires, schedules, tenants
from adconnect.errors import ConfigurationError
from adconnect.plugins import PluginHost
from adconnect.scheduling.cron import build_trigger, next_fire_after

__all__ = ["EffectiveSchedule", "compute_schedules", "job_key"]

log = logging.getLogger(__name__)


def job_key(connection_id: UUID, name: str) -> str:
    """The id of one connection's schedule: APScheduler job id and ``schedule_fires.job_key``."""
    return f"{connection_id}:{name}"


@dataclass(frozen=True)
class EffectiveSchedule:
    """One schedule of one connection, after overrides."""

    tenant_id: UUID
    tenant_slug: str
    connection_id: UUID
    connection_name: str
    provider_id: str
    name: str
    cron: str
    timezone: str
    #: the streams each fire syncs (never empty: "every stream" is spelled out)
    streams: tuple[str, ...]
    #: where the cron came from: ``default``, ``tenant`` or ``connection``
    source: str
    enabled: bool
    #: None when the leader runs this schedule; else why it does not
    inactive_reason: str | None
    last_fired_at: dt.datetime | None = None

    @property
    def key(self) -> str:
        return job_key(self.connection_id, self.name)

    @property
    def active(self) -> bool:
        return self.inactive_reason is None

    @property
    def signature(self) -> tuple[str, str, tuple[str, ...]]:
        """What, if it changes, makes the leader replace the job."""
        return self.cron, self.timezone, self.streams

    def trigger(self) -> BaseTrigger:
        return build_trigger(self.cron, self.timezone)

    def next_fire(self, now: dt.datetime) -> dt.datetime | None:
        """The next fire time after ``now``, in the schedule's zone (None when inactive)."""
        return next_fire_after(self.trigger(), now) if self.active else None


@dataclass
class _Layer:
    cron: str
    timezone: str
    streams: tuple[str, ...] | None
    enabled: bool
    source: str


def _merge(layer: _Layer | None, row: Any, source: str) -> _Layer:
    streams = tuple(row.streams) if row.streams is not None else (layer.streams if layer else None)
    return _Layer(row.cron, row.timezone, streams, bool(row.enabled), source)


def _inactive_reason(connection: Any, provider_enabled: bool, enabled: bool) -> str | None:
    if not provider_enabled:
        return "provider disabled for the tenant"
    if connection.status != "active":
        return f"connection {connection.status}"
    if connection.external_account_id is None:
        return "no account selected"
    if not enabled:
        return "schedule disabled"
    return None


@dataclass(frozen=True)
class _Provider:
    defaults: dict[str, _Layer]
    streams: tuple[str, ...]


def _providers(host: PluginHost, platform_timezone: str) -> dict[str, _Provider]:
    """What every installed provider proposes: default schedules and stream names."""
    found = {}
    for pid in host.provider_ids():
        defaults = {
            spec.name: _Layer(spec.cron, platform_timezone, spec.streams, True, "default")
            for spec in host.info(pid).default_schedules
        }
        found[pid] = _Provider(defaults, tuple(s.name for s in host.streams(pid)))
    return found


def _tenant_schedules(
    conn: Connection, providers: dict[str, _Provider], tenant: Any
) -> list[EffectiveSchedule]:
    enabled = {
        r.provider_id: bool(r.enabled)
        for r in conn.execute(select(provider_enablements.c.provider_id, provider_enablements.c.enabled))
    }
    rows = conn.execute(select(schedules)).all()
    fires = {r.job_key: r.last_fired_at for r in conn.execute(select(schedule_fires))}
    found: list[EffectiveSchedule] = []
    query = select(connections).order_by(connections.c.provider_id, connections.c.name)
    for connection in conn.execute(query).all():
        pid = connection.provider_id
        provider = providers.get(pid)
        if provider is None:  # not installed here
            continue
        layers = dict(provider.defaults)
        for level, source in ((None, "tenant"), (connection.id, "connection")):
            for row in rows:
                if row.provider_id == pid and row.connection_id == level:
                    layers[row.name] = _merge(layers.get(row.name), row, source)
        all_streams = provider.streams
        for name, layer in sorted(layers.items()):
            streams = layer.streams or all_streams
            unknown = [s for s in streams if s not in all_streams]
            if unknown:
                log.warning("schedule %s of %s names unknown stream(s) %s", name, pid, ", ".join(unknown))
                streams = tuple(s for s in streams if s in all_streams)
            reason = _inactive_reason(connection, enabled.get(pid, False), layer.enabled)
            if reason is None:
                try:
                    build_trigger(layer.cron, layer.timezone)
                except ConfigurationError as exc:
                    reason = f"invalid: {exc.user_message}"
            found.append(
                EffectiveSchedule(
                    tenant_id=tenant.id,
                    tenant_slug=tenant.slug,
                    connection_id=connection.id,
                    connection_name=connection.name,
                    provider_id=pid,
                    name=name,
                    cron=layer.cron,
                    timezone=layer.timezone,
                    streams=streams,
                    source=layer.source,
                    enabled=layer.enabled,
                    inactive_reason=reason if streams else (reason or "no known stream"),
                    last_fired_at=fires.get(job_key(connection.id, name)),
                )
            )
    return found


def compute_schedules(
    db: Database, host: PluginHost, platform_timezone: str, *, tenant_ids: Iterable[UUID] | None = None
) -> list[EffectiveSchedule]:
    """Every connection's effective schedules (active or not), in one read-only transaction.

    ``tenant_ids`` limits the result to those tenants.
    """
    wanted = None if tenant_ids is None else set(tenant_ids)
    providers = _providers(host, platform_timezone)
    found: list[EffectiveSchedule] = []
    with db.platform() as conn:
        for tenant in conn.execute(select(tenants.c.id, tenants.c.slug).order_by(tenants.c.slug)).all():
            if wanted is not None and tenant.id not in wanted:
                continue
            set_tenant(conn, tenant.id)  # transaction-local; each tenant in turn
            found.extend(_tenant_schedules(conn, providers, tenant))
    return found
