"""``adconnect schedules``: list the effective schedules (with their source and next fire), override
them per tenant or per connection, switch them off and on; bad crons and zones fail in one line."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import insert

from adconnect.db.schema import connections
from adconnect.tenants import resolve_tenant


@pytest.fixture
def cli(adconnect_cli, adconnect_db):
    invoke = adconnect_cli
    invoke("tenants", "create", "Acme Corp")
    invoke("providers", "enable", "demo_ads", "--tenant", "acme-corp")
    tenant = resolve_tenant(adconnect_db, "acme-corp")
    with adconnect_db.tenant(tenant.id) as conn:
        for name, status, account in (("main", "active", "1001"), ("old", "needs_reauth", "1002")):
            conn.execute(
                insert(connections).values(
                    tenant_id=tenant.id,
                    provider_id="demo_ads",
                    name=name,
                    status=status,
                    external_account_id=account,
                )
            )
    return invoke


def _listed(cli) -> dict[tuple[str, str], dict[str, object]]:
    body = json.loads(cli("schedules", "list", "--tenant", "acme-corp", "--json").stdout)
    return {(s["connection"], s["name"]): s for s in body["schedules"]}


def test_list_set_disable_enable(cli):
    listed = _listed(cli)
    main = listed["main", "hourly"]
    assert (main["source"], main["cron"], main["timezone"], main["active"]) == (
        "default",
        "0 6-22 * * *",
        "America/Jamaica",
        True,
    )
    assert main["streams"] == ["campaign_daily"]
    fire = dt.datetime.fromisoformat(str(main["next_fire"]))
    assert fire.utcoffset() == dt.timedelta(hours=-5) and fire.minute == 0 and 6 <= fire.hour <= 22
    assert listed["old", "hourly"]["inactive_reason"] == "connection needs_reauth"
    assert "Schedules of acme-corp" in cli("schedules", "list", "--tenant", "acme-corp").stdout

    done = cli(
        "schedules",
        "set",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--name",
        "hourly",
        "--cron",
        "30 7 * * 1-5",
        "--timezone",
        "UTC",
    )
    assert "schedule hourly of acme-corp/demo_ads set: '30 7 * * 1-5' in UTC; next fire" in done.stdout
    listed = _listed(cli)
    assert (listed["main", "hourly"]["source"], listed["old", "hourly"]["source"]) == ("tenant", "tenant")
    weekday = dt.datetime.fromisoformat(str(listed["main", "hourly"]["next_fire"]))
    assert weekday.weekday() < 5 and (weekday.hour, weekday.minute) == (7, 30)

    cli(
        "schedules",
        "set",
        "--tenant",
        "acme-corp",
        "--provider",
        "demo_ads",
        "--connection",
        "main",
        "--name",
        "hourly",
        "--cron",
        "0 * * * *",
        "--streams",
        "campaign_daily",
    )
    listed = _listed(cli)
    assert listed["main", "hourly"]["source"] == "connection"
    assert listed["main", "hourly"]["timezone"] == "America/Jamaica"  # the platform's, by default
    assert listed["old", "hourly"]["cron"] == "30 7 * * 1-5"

    switch = ("--tenant", "acme-corp", "--provider", "demo_ads", "--connection", "main", "--name", "hourly")
    assert "disabled" in cli("schedules", "disable", *switch).stdout
    off = _listed(cli)["main", "hourly"]
    assert (off["active"], off["inactive_reason"], off["next_fire"]) == (False, "schedule disabled", None)
    cli("schedules", "enable", *switch)
    assert _listed(cli)["main", "hourly"]["active"] is True

    # disabling at the tenant level where only the default exists copies the default's cron
    cli("schedules", "disable", "--tenant", "acme-corp", "--provider", "demo_ads", "--name", "hourly")
    listed = _listed(cli)
    assert listed["old", "hourly"]["enabled"] is False and listed["main", "hourly"]["active"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--name", "hourly", "--cron", "0 6 * *"),
            "error: invalid cron '0 6 * *': it has 4 field(s), not 5",
        ),
        (("--name", "hourly", "--cron", "61 * * * *"), "error: invalid cron '61 * * * *'"),
        (
            ("--name", "hourly", "--cron", "0 6 * * *", "--timezone", "Moon/Base"),
            "unknown time zone 'Moon/Base'",
        ),
        (("--name", "hourly", "--cron", "0 6 * * *", "--streams", "nope"), "demo_ads has no stream(s) nope"),
        (("--name", "Hourly!", "--cron", "0 6 * * *"), "error: invalid schedule name 'Hourly!'"),
        (
            ("--name", "hourly", "--cron", "0 6 * * *", "--connection", "ghost"),
            "no demo_ads connection named",
        ),
    ],
)
def test_set_refuses_bad_input_in_one_line(cli, args, message):
    result = cli("schedules", "set", "--tenant", "acme-corp", "--provider", "demo_ads", *args, code=1)
    first = result.stderr.splitlines()[0]
    assert message in first, result.stderr


def test_switching_an_unknown_schedule_says_so(cli):
    result = cli(
        "schedules", "disable", "--tenant", "acme-corp", "--provider", "demo_ads", "--name", "weekly", code=1
    )
    assert "demo_ads has no schedule named 'weekly' here" in result.stderr
