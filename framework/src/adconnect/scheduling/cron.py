"""5-field crontab expressions as APScheduler 3.x triggers, with crontab's meaning kept.

APScheduler 3.x reads ``CronTrigger.from_crontab('30 6 * * 1-5')`` with 0 = Monday, so it
fires Tuesday to Saturday (``reference/offline-testing.md`` §5). Schedules here are written the
crontab way (0 or 7 = Sunday, 1 = Monday, or day names), so the day-of-week field is expanded
into the set of days crontab means and handed to APScheduler as day *names*.

Crontab also fires when EITHER the day of month or the day of week matches if both are
restricted (``0 6 1 * mon``: the 1st, and every Monday); APScheduler's fields all have to match.
Such an expression becomes an :class:`~apscheduler.triggers.combining.OrTrigger` of the two.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from adconnect.errors import ConfigurationError

__all__ = ["build_trigger", "check_timezone", "next_fire_after", "next_fire_times"]

#: crontab's numbering: 0 (and 7) = Sunday.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_APS_ORDER = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HINT = "use 5 fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * mon-fri'"


def check_timezone(name: str) -> ZoneInfo:
    """The zone called ``name``, or a :class:`ConfigurationError` naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {name!r}", hint="use an IANA name such as America/Jamaica or UTC"
        ) from None


def _day(token: str, expression: str) -> int:
    token = token.strip().lower()
    if token in _CRON_DAYS:
        return _CRON_DAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ConfigurationError(f"invalid cron {expression!r}: {token!r} is not a day of the week", hint=_HINT)


def _days_of_week(field: str, expression: str) -> str:
    """Crontab's day-of-week field as APScheduler day names (``"*"`` for every day)."""
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ConfigurationError(f"invalid cron {expression!r}: bad step in {part!r}", hint=_HINT)
            step = int(step_text)
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            first, last = _day(low, expression), _day(high, expression)
            if high.strip() == "7":
                last = 7  # "5-7" is Friday to Sunday
            if last < first:
                raise ConfigurationError(
                    f"invalid cron {expression!r}: day range {span!r} runs backwards", hint=_HINT
                )
        else:
            first = last = _day(span, expression)
            if step_text:
                last = 6
        days.update(d % 7 for d in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in _APS_ORDER if _CRON_DAYS.index(name) in days)


def build_trigger(expression: str, timezone: str) -> BaseTrigger:
    """An APScheduler trigger that fires when crontab would, in ``timezone``.

    Raises :class:`ConfigurationError` with a one-line message for a bad expression or zone.
    """
    zone = check_timezone(timezone)
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"invalid cron {expression!r}: it has {len(fields)} field(s), not 5", hint=_HINT
        )
    minute, hour, day, month, dow = fields
    try:
        weekdays = _days_of_week(dow, expression)
        common = {"minute": minute, "hour": hour, "month": month, "second": "0", "timezone": zone}
        if day != "*" and dow != "*":
            return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=weekdays, **common)])
        return CronTrigger(day=day, day_of_week=weekdays, **common)
    except ValueError as exc:
        raise ConfigurationError(f"invalid cron {expression!r}: {exc}", hint=_HINT) from None


def next_fire_after(trigger: BaseTrigger, moment: dt.datetime) -> dt.datetime | None:
    """The first fire time strictly after ``moment`` (in the trigger's zone), if any."""
    fire: dt.datetime | None = trigger.get_next_fire_time(None, moment)
    if fire is not None and fire <= moment:
        fire = trigger.get_next_fire_time(None, moment + dt.timedelta(seconds=1))
    return fire


def next_fire_times(trigger: BaseTrigger, start: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire times after ``start``."""
    times: list[dt.datetime] = []
    moment = start
    while len(times) < count:
        fire = next_fire_after(trigger, moment)
        if fire is None:
            break
        times.append(fire)
        moment = fire
    return times
