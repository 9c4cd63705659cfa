"""`hostsnap-controller policies`, `plan` and `run` print what they printed before the store
kept one policy model (controller.policies.Policy): the JSON and tables below were taken from
the release before (main at d2bdb94, checked again at a5c6849). A stored policy that no longer
reads is listed, left out of the plan with why, refused by `run` and can be deleted: as before
for a cron expression the planner refuses; a time zone the system no longer knows made the
release before fail every listing, and is such a policy now. Blank selector values it stored
as a policy unusable at once are refused now, as empty ones were."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.config import load
from controller.store import Store, schema
from tests.unit import test_controller_cli as cli

sim, config = cli.sim, cli.config  # the simulator and a configuration of a SQLite store
run, as_json = cli.run, cli.as_json


def add_two(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    """A CloudStack-form policy selecting by every kind, and a disabled cron one."""
    added = as_json(
        config, capsys, "policies", "add", "nightly", "--interval", "DAILY", "--schedule",
        "30:02", "--maxsnaps", "3", "--vm", "web-1", "--volume", "vol-x", "--tag",
        "backup=daily", "--account", "alice",
    )  # fmt: skip
    code, out, err = run(
        config, capsys, "policies", "add", "weekdays", "--cron", "15  */6 * * 1-5",
        "--timezone", "Europe/Berlin", "--maxsnaps", "2", "--quiesce", "required",
        "--tag", "tier = gold", "--disabled",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    return added, out


def test_policies_json_has_the_stored_form_with_schedule_selectors_and_times(config, capsys):
    added, out = add_two(config, capsys)

    listed = as_json(config, capsys, "policies")

    nightly, weekdays = listed
    assert added == nightly
    assert out == f"policy weekdays added ({weekdays['id']})\n"
    for policy in listed:
        assert datetime.fromisoformat(policy.pop("created_at")).utcoffset() is not None
        assert datetime.fromisoformat(policy.pop("updated_at")).utcoffset() is not None
        assert len(policy.pop("id")) == 36  # a UUID
    assert listed == [
        {
            "enabled": True,
            "max_snaps": 3,
            "name": "nightly",
            "quiesce": "preferred",
            "schedule": {"interval_type": "DAILY", "schedule": "30:02", "timezone": "UTC"},
            "selectors": [
                {"key": "", "kind": "vm", "value": "web-1"},
                {"key": "", "kind": "volume", "value": "vol-x"},
                {"key": "backup", "kind": "tag", "value": "daily"},
                {"key": "", "kind": "account", "value": "alice"},
            ],
        },
        {
            "enabled": False,
            "max_snaps": 2,
            "name": "weekdays",
            "quiesce": "required",
            "schedule": {"expression": "15 */6 * * 1-5", "timezone": "Europe/Berlin"},
            "selectors": [{"key": "tier", "kind": "tag", "value": "gold"}],
        },
    ]


def test_policies_table_shows_each_schedule_and_what_it_selects(config, capsys):
    add_two(config, capsys)

    code, out, _ = run(config, capsys, "policies")

    assert code == 0
    assert out.splitlines() == [
        "NAME      SCHEDULE                             MAXSNAPS  QUIESCE    SELECTS"
        "                                               ENABLED",
        "nightly   daily at 02:30 UTC (DAILY 30:02)     3         preferred  vm=web-1 volume=vol-x"
        " tag=backup=daily account=alice  yes",
        "weekdays  cron '15 */6 * * 1-5' Europe/Berlin  2         required   tag=tier=gold"
        "                                         no",
    ]


def test_plan_json_has_the_plan_and_what_cannot_be_planned(config, capsys):
    add_two(config, capsys)

    planned = as_json(config, capsys, "plan")

    assert set(planned) == {"plan", "unplannable"} and planned["unplannable"] == []
    # In the order of their next runs, which depends on the time of day: compared as a set.
    assert {p["policy_name"] for p in planned["plan"]["policies"]} == {"weekdays", "nightly"}


def break_policy(config: Path, **columns: object) -> None:
    """Rewrites the policy `nightly`'s row as an operator's SQL or an older tzdata leaves it."""
    with Store.open(load(config).store.url) as db, db.engine.begin() as conn:
        conn.execute(
            sa.update(schema.policies).where(schema.policies.c.name == "nightly").values(**columns)
        )


@pytest.mark.parametrize(
    ("columns", "stored", "problem"),
    [
        ({"timezone": "Asia/Nowhere"},
         {"interval_type": "DAILY", "schedule": "30:02", "timezone": "Asia/Nowhere"},
         "unknown time zone 'Asia/Nowhere': give an IANA name such as Europe/Berlin or UTC"),
        ({"schedule_kind": "cron", "interval_type": None, "schedule": "61 * * * *"},
         {"expression": "61 * * * *", "timezone": "UTC"},
         "cron '61 * * * *': minute '61': 61 is out of range 0-59"),
    ],
)  # fmt: skip
def test_a_stored_policy_that_no_longer_reads_is_listed_unplanned_and_refused_by_run(
    config, capsys, columns, stored, problem
):
    add_two(config, capsys)
    break_policy(config, **columns)

    code, table, _ = run(config, capsys, "policies")
    listed, _ = as_json(config, capsys, "policies")
    planned = as_json(config, capsys, "plan")
    code_plan, plain_plan, _ = run(config, capsys, "plan")
    code_run, _, err = run(config, capsys, "run", "nightly")

    assert code == 0 and f"nightly   unusable: {problem}  3" in table
    assert "vm=web-1 volume=vol-x tag=backup=daily account=alice" in table
    assert listed["schedule"] == stored and len(listed["selectors"]) == 4
    assert planned["unplannable"] == [f"policy nightly: {problem}"]
    assert [p["policy_name"] for p in planned["plan"]["policies"]] == ["weekdays"]
    assert code_plan == 0 and plain_plan.splitlines()[-1] == f"policy nightly: {problem}"
    assert code_run == 2 and f"policy nightly cannot run: {problem}" in err
    code, out, _ = run(config, capsys, "policies", "delete", "nightly")
    assert (code, out) == (0, "policy nightly deleted\n")
    assert [p["name"] for p in as_json(config, capsys, "policies")] == ["weekdays"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # CloudStack takes no cron, so no cron macro either: five fields, as before.
        (["--cron", "@daily"], "cron expression '@daily' is not five cron fields"),
        (["--cron", "@hourly"], "cron expression '@hourly' is not five cron fields"),
        (["--cron", "* * * *"], "cron expression '* * * *' is not five cron fields"),
        (["--cron", "61 * * * *"], "cron '61 * * * *': minute '61': 61 is out of range 0-59"),
        (["--cron", "5/10 * * * *"],
         "cron '5/10 * * * *': minute '5/10': a step needs a range or '*' (write 5-59/10)"),
        (["--cron", "0 0 * * *", "--timezone", "Mars/Olympus"],
         "unknown time zone 'Mars/Olympus'"),
        (["--cron", "0 0 * * *", "--timezone", " UTC"], "unknown time zone ' UTC'"),
        (["--interval", "DAILY"], "--interval needs --schedule (MM, MM:HH or MM:HH:DD)"),
        (["--interval", "DAILY", "--schedule", "30:25"], "DAILY schedule '30:25' out of range"),
        (["--interval", "HOURLY", "--schedule", "5:02"], "HOURLY schedule '5:02' is not 1 numbers"),
        (["--interval", "WEEKLY", "--schedule", "0:0:8"], "WEEKLY schedule '0:0:8' out of range"),
        (["--interval", "MONTHLY", "--schedule", "a:b:c"],
         "MONTHLY schedule 'a:b:c' is not 3 numbers"),
        (["--interval", "DAILY", "--schedule", " 30:02"],
         "DAILY schedule ' 30:02' is not 2 numbers"),
        (["--cron", "0 0 * * *", "--maxsnaps", "0"], "max_snaps must be at least 1"),
        (["--cron", "0 0 * * *", "--vm", "x"], "a selector is given twice"),
        (["--cron", "0 0 * * *", "--vm", ""], "a vm selector needs a value"),
        (["--cron", "0 0 * * *", "--account", ""], "a account selector needs a value"),
        # Blank values the release before stored, as a policy listed "unusable" at once.
        (["--cron", "0 0 * * *", "--vm", " "], "a vm selector needs a value"),
        (["--cron", "0 0 * * *", "--volume", " "], "a volume selector needs a value"),
        (["--cron", "0 0 * * *", "--account", "\t"], "a account selector needs a value"),
        (["--cron", "0 0 * * *", "--tag", "k"], "--tag 'k': write key=value"),
    ],
)  # fmt: skip
def test_what_policies_add_refused_it_refuses_with_the_same_message(config, capsys, args, message):
    code, out, err = run(
        config, capsys, "policies", "add", "bad", "--maxsnaps", "2", "--vm", "x", *args
    )

    assert (code, out, err) == (2, "", f"hostsnap-controller: {message}\n")
    assert as_json(config, capsys, "policies") == []


@pytest.mark.parametrize("name", ["", "n" * 256])
def test_a_name_the_store_cannot_keep_is_refused(config, capsys, name):
    code, _, err = run(config, capsys, "policies", "add", name, "--cron", "0 0 * * *",
                       "--maxsnaps", "1", "--vm", "x")  # fmt: skip

    assert code == 2 and "a policy needs a name of at most 255 characters" in err


def test_a_name_taken_is_refused_as_before(config, capsys):
    add_two(config, capsys)

    code, _, err = run(config, capsys, "policies", "add", "nightly", "--cron", "0 0 * * *",
                       "--maxsnaps", "1", "--vm", "x")  # fmt: skip

    assert (code, err) == (1, "hostsnap-controller: a policy named 'nightly' exists\n")
