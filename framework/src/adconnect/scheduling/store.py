"""Writes to ``schedules`` (operator overrides) and ``schedule_fires`` (when each job last fired).

``schedule_fires.last_fired_at`` is what lets a new leader catch up: it is written after every
fire, and first when the leader starts scheduling a job (so a job added just before its first
fire is not lost either). Both tables are tenant tables (row-level security).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert

from adconnect.db.database import Database
from adconnect.db.schema import connections, schedule_fires, schedules
from adconnect.errors import ConfigurationError, NotFoundError
from adconnect.plugins import PluginHost
from adconnect.scheduling.cron import build_trigger, check_timezone

__all__ = [
    "ScheduleTarget",
    "last_fires",
    "record_fire",
    "resolve_target",
    "seed_fire",
    "set_schedule",
    "set_schedule_enabled",
]


def record_fire(db: Database, tenant_id: UUID, key: str, at: dt.datetime) -> None:
    """Remember that ``key`` fired at ``at`` (never moves backwards)."""
    with db.tenant(tenant_id) as conn:
        stmt = insert(schedule_fires).values(tenant_id=tenant_id, job_key=key, last_fired_at=at)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[schedule_fires.c.tenant_id, schedule_fires.c.job_key],
                set_={
                    "last_fired_at": func.greatest(
                        schedule_fires.c.last_fired_at, stmt.excluded.last_fired_at
                    )
                },
            )
        )


def seed_fire(db: Database, tenant_id: UUID, key: str, at: dt.datetime) -> None:
    """Start the fire record of a job that has none (a new schedule counts from ``at``)."""
    with db.tenant(tenant_id) as conn:
        conn.execute(
            insert(schedule_fires)
            .values(tenant_id=tenant_id, job_key=key, last_fired_at=at)
            .on_conflict_do_nothing(index_elements=[schedule_fires.c.tenant_id, schedule_fires.c.job_key])
        )


def last_fires(db: Database, tenant_id: UUID) -> dict[str, dt.datetime]:
    """``job_key -> last_fired_at`` for one tenant."""
    with db.tenant(tenant_id) as conn:
        return {r.job_key: r.last_fired_at for r in conn.execute(select(schedule_fires))}


@dataclass(frozen=True)
class ScheduleTarget:
    """Where an override applies: a tenant's provider, or one of its connections."""

    tenant_id: UUID
    provider_id: str
    connection_id: UUID | None
    connection_name: str | None

    @property
    def level(self) -> str:
        return "tenant" if self.connection_id is None else "connection"


def resolve_target(
    db: Database, host: PluginHost, tenant_id: UUID, provider_id: str, connection_name: str | None
) -> ScheduleTarget:
    """Check the provider is installed and find the named connection (if one is named)."""
    host.provider(provider_id)  # raises NotFoundError with the installed list
    if connection_name is None:
        return ScheduleTarget(tenant_id, provider_id, None, None)
    with db.tenant(tenant_id) as conn:
        found = conn.execute(
            select(connections.c.id).where(
                connections.c.provider_id == provider_id, connections.c.name == connection_name
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(
            f"no {provider_id} connection named {connection_name!r} for this tenant",
            hint="`adconnect connections list --tenant T` shows the connections",
        )
    return ScheduleTarget(tenant_id, provider_id, found, connection_name)


def _check_streams(host: PluginHost, provider_id: str, streams: Sequence[str] | None) -> list[str] | None:
    if streams is None:
        return None
    known = {s.name for s in host.streams(provider_id)}
    unknown = [s for s in streams if s not in known]
    if unknown or not streams:
        raise ConfigurationError(
            f"{provider_id} has no stream(s) {', '.join(unknown) or '(none given)'}",
            hint=f"streams: {', '.join(sorted(known))}",
        )
    return list(streams)


def _row_filter(target: ScheduleTarget, name: str) -> list[ColumnElement[bool]]:
    level = (
        schedules.c.connection_id.is_(None)
        if target.connection_id is None
        else schedules.c.connection_id == target.connection_id
    )
    return [schedules.c.provider_id == target.provider_id, schedules.c.name == name, level]


def set_schedule(
    db: Database,
    host: PluginHost,
    target: ScheduleTarget,
    *,
    name: str,
    cron: str,
    timezone: str,
    streams: Sequence[str] | None = None,
) -> None:
    """Create or change the override ``name`` at ``target`` (its enabled flag is kept)."""
    check_timezone(timezone)
    build_trigger(cron, timezone)
    stream_list = _check_streams(host, target.provider_id, streams)
    with db.tenant(target.tenant_id) as conn:
        values = {"cron": cron, "timezone": timezone, "streams": stream_list, "updated_at": func.now()}
        changed = conn.execute(update(schedules).where(*_row_filter(target, name)).values(**values)).rowcount
        if not changed:
            conn.execute(
                insert(schedules).values(
                    tenant_id=target.tenant_id,
                    connection_id=target.connection_id,
                    provider_id=target.provider_id,
                    name=name,
                    **values,
                )
            )


def set_schedule_enabled(
    db: Database,
    target: ScheduleTarget,
    *,
    name: str,
    enabled: bool,
    inherited: tuple[str, str] | None,
) -> None:
    """Switch ``name`` on or off at ``target``.

    Without a row at that level one is created from ``inherited`` (the cron and time zone the
    level inherits); ``None`` there means the name is unknown.
    """
    with db.tenant(target.tenant_id) as conn:
        changed = conn.execute(
            update(schedules).where(*_row_filter(target, name)).values(enabled=enabled, updated_at=func.now())
        ).rowcount
        if changed:
            return
        if inherited is None:
            raise NotFoundError(
                f"{target.provider_id} has no schedule named {name!r} here",
                hint="`adconnect schedules list --tenant T` shows the schedules",
            )
        cron, timezone = inherited
        conn.execute(
            insert(schedules).values(
                tenant_id=target.tenant_id,
                connection_id=target.connection_id,
                provider_id=target.provider_id,
                name=name,
                cron=cron,
                timezone=timezone,
                enabled=enabled,
            )
        )
