"""Logs every sync start and finish: the built-in listener of the event hooks."""

from __future__ import annotations

import logging

from adconnect._markers import hookimpl
from adconnect.models import SyncFinished, SyncStarted

log = logging.getLogger("adconnect.events")


@hookimpl(trylast=True)
def adconnect_sync_started(event: SyncStarted) -> None:
    log.info(
        "sync started run=%s tenant=%s provider=%s stream=%s window=%s..%s",
        event.run_id,
        event.connection.tenant_id,
        event.connection.provider_id,
        event.stream,
        event.window.start.isoformat(),
        event.window.end.isoformat(),
    )


@hookimpl(trylast=True)
def adconnect_sync_finished(event: SyncFinished) -> None:
    level = logging.INFO if event.status == "succeeded" else logging.WARNING
    log.log(
        level,
        "sync %s run=%s tenant=%s provider=%s stream=%s records=%d error=%s",
        event.status,
        event.run_id,
        event.connection.tenant_id,
        event.connection.provider_id,
        event.stream,
        event.records_read,
        event.error_class or "-",
    )
