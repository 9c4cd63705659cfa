"""Policies (schedule in CloudStack's form or cron, retention, quiesce, selector) as the store
keeps them, and their runs, one per schedule slot."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from controller.policies import (
    Policy,
    PolicyError,
    Quiesce,
    Schedule,
    SelectionError,
    Selector,
    TagMatch,
)
from controller.store import (
    Conflict,
    JobKind,
    JobSpec,
    NotFound,
    RunState,
    SelectorRow,
    StaleClaim,
    schema,
)
from controller.store.clock import to_datetime

DAILY = Schedule.cloudstack("DAILY", "30:02", "Europe/Berlin")
SLOT = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)


def daily(name: str = "daily", **options) -> Policy:
    every = Selector(vms=("vm-1",), tags=(TagMatch("backup", "daily"),), accounts=("acc",))
    settings = {"max_snaps": 7, "selector": every, "quiesce": Quiesce.REQUIRED, **options}
    return Policy(f"policy-{name}", name, DAILY, **settings)


def test_a_policy_reads_back_as_it_was_given(store):
    policy = daily()

    created = store.policies.create(policy)

    assert created.policy == policy and created.problem == ""
    assert created.usable() is created.policy
    assert store.policies.get(policy.id) == created
    assert store.policies.by_name("daily") == created
    assert store.policies.by_name("nightly") is None
    assert (created.id, created.name, created.max_snaps, created.quiesce) == (
        "policy-daily",
        "daily",
        7,
        "required",
    )
    assert (created.schedule_kind, created.interval_type, created.schedule, created.timezone) == (
        "interval",
        "DAILY",
        "30:02",
        "Europe/Berlin",
    )
    assert created.created_at == created.updated_at


def test_selector_values_are_written_vms_volumes_tags_accounts_and_read_back_in_order(store):
    selector = Selector(
        vms=("vm-2", "vm-1"),
        volumes=("vol-9",),
        tags=(TagMatch("tier", "gold"), TagMatch("backup", "daily")),
        accounts=("bob", "alice"),
    )

    created = store.policies.create(daily(selector=selector))

    assert store.policies.get("policy-daily").usable().selector == selector
    assert created.selectors == (
        SelectorRow("vm", "vm-2"),
        SelectorRow("vm", "vm-1"),
        SelectorRow("volume", "vol-9"),
        SelectorRow("tag", "gold", "tier"),
        SelectorRow("tag", "daily", "backup"),
        SelectorRow("account", "bob"),
        SelectorRow("account", "alice"),
    )


def test_a_selector_of_domains_is_not_kept_and_nothing_is_stored(store):
    with pytest.raises(SelectionError, match="the store keeps no selector of domains"):
        store.policies.create(daily(selector=Selector(vms=("vm-1",), domains=("ROOT",))))

    assert store.policies.all() == []


def insert_rows(store, policies: list[dict], selectors: list[dict]) -> None:
    """Rows written as an older release or an operator's SQL would write them."""
    made = 1_764_000_000_000  # ms
    row = {"enabled": True, "timezone": "UTC", "created_at": made, "updated_at": made}
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schema.policies), [{**row, **p} for p in policies])
        conn.execute(sa.insert(schema.policy_selectors), selectors)


WEEKLY_ROW = {
    "id": "p-w", "name": "weekly", "schedule_kind": "interval", "interval_type": "WEEKLY",
    "schedule": "00:03:1", "max_snaps": 4, "quiesce": "none",
}  # fmt: skip


def test_rows_in_the_schemas_encoding_read_as_the_policies_they_stand_for(store):
    cron_row = {
        "id": "p-c", "name": "cron", "schedule_kind": "cron", "interval_type": None,
        "schedule": "0 3 * * 1-5", "max_snaps": 2, "quiesce": "required", "enabled": False,
    }  # fmt: skip
    insert_rows(
        store,
        [WEEKLY_ROW, cron_row],
        [
            {"policy_id": "p-w", "kind": "vm", "tag_key": "", "value": "vm-1"},
            {"policy_id": "p-w", "kind": "tag", "tag_key": "backup", "value": "weekly"},
            {"policy_id": "p-w", "kind": "volume", "tag_key": "", "value": "vol-1"},
            {"policy_id": "p-c", "kind": "account", "tag_key": "", "value": "alice"},
        ],
    )

    stored = store.policies.all()

    assert [p.policy for p in stored] == [
        Policy(
            "p-c",
            "cron",
            Schedule.cron("0 3 * * 1-5"),
            2,
            Selector(accounts=("alice",)),
            Quiesce.REQUIRED,
            enabled=False,
        ),
        Policy(
            "p-w",
            "weekly",
            Schedule.cloudstack("WEEKLY", "00:03:1"),
            4,
            Selector(vms=("vm-1",), volumes=("vol-1",), tags=(TagMatch("backup", "weekly"),)),
            Quiesce.NONE,
        ),
    ]
    assert stored[1].created_at == to_datetime(1_764_000_000_000)
    assert [s.kind for s in stored[1].selectors] == ["vm", "tag", "volume"]  # as written


@pytest.mark.parametrize(
    ("columns", "selector", "problem"),
    [
        ({"timezone": "Mars/Olympus"}, None, "unknown time zone 'Mars/Olympus'"),
        ({"schedule_kind": "cron", "interval_type": None, "schedule": "61 * * * *"}, None,
         "cron '61 * * * *': minute '61': 61 is out of range 0-59"),
        ({"schedule": "00:25:1"}, None, "hour 25 is out of range 0-23"),
        ({"schedule_kind": "yearly"}, None, "schedule kind 'yearly': interval or cron"),
        ({"quiesce": "always"}, None, "quiesce 'always': required, preferred or none"),
        ({"max_snaps": 0}, None, "maxsnaps must be at least 1"),
        ({}, {"kind": "domain", "tag_key": "", "value": "ROOT"},
         "selector kind 'domain': vm, volume, tag or account"),
        ({}, {"kind": "tag", "tag_key": "", "value": "x"}, "needs a key"),
    ],
)  # fmt: skip
def test_rows_that_no_longer_make_a_policy_are_listed_with_why_and_can_be_deleted(
    store, columns, selector, problem
):
    insert_rows(
        store,
        [{**WEEKLY_ROW, **columns}, {**WEEKLY_ROW, "id": "p-ok", "name": "ok"}],
        [
            {"policy_id": "p-w", **(selector or {"kind": "vm", "tag_key": "", "value": "vm-1"})},
            {"policy_id": "p-ok", "kind": "vm", "tag_key": "", "value": "vm-1"},
        ],
    )

    ok, broken = store.policies.all()

    assert ok.policy is not None and ok.name == "ok"
    assert broken.policy is None and problem in broken.problem
    assert (broken.id, broken.name) == ("p-w", "weekly")
    with pytest.raises(PolicyError, match=re.escape(problem)):
        broken.usable()
    assert store.policies.by_name("weekly") == broken
    store.policies.delete("p-w")
    assert [p.name for p in store.policies.all()] == ["ok"]


def test_a_cron_policy_keeps_its_expression_and_time_zone(store):
    cron = Schedule.cron("15  */6 * * 1-5", "America/New_York")
    created = store.policies.create(Policy("p-1", "weekdays", cron, 3, Selector(vms=("vm-1",))))

    stored = store.policies.get(created.id)
    assert (stored.schedule_kind, stored.schedule, stored.timezone) == (
        "cron",
        "15 */6 * * 1-5",
        "America/New_York",
    )
    assert stored.usable().schedule == Schedule.cron("15 */6 * * 1-5", "America/New_York")


def test_policy_names_and_ids_are_unique(store):
    store.policies.create(daily())

    with pytest.raises(Conflict, match=r"^a policy named 'daily' exists$"):
        store.policies.create(replace(daily(), id="another-id"))
    with pytest.raises(Conflict, match="a policy with id policy-daily exists"):
        store.policies.create(replace(daily(), name="another-name"))


def test_an_update_replaces_settings_and_selectors(store):
    created = store.policies.create(daily())
    hourly = replace(
        daily(),
        name="hourly",
        schedule=Schedule.cloudstack("HOURLY", "05"),
        max_snaps=24,
        selector=Selector(volumes=("vol-9",)),
        enabled=False,
    )

    updated = store.policies.update(hourly)

    assert updated.policy == hourly and store.policies.get(created.id) == updated
    assert updated.selectors == (SelectorRow("volume", "vol-9"),)
    assert updated.created_at == created.created_at
    with pytest.raises(NotFound):
        store.policies.update(replace(hourly, id="no-such-policy"))


def test_only_enabled_policies_are_listed_when_asked(store):
    store.policies.create(daily("on"))
    store.policies.create(daily("off", enabled=False))

    assert [p.name for p in store.policies.all()] == ["off", "on"]
    assert [p.name for p in store.policies.all(enabled=True)] == ["on"]


def test_a_policy_without_runs_can_be_deleted_one_with_runs_only_disabled(store):
    unused = store.policies.create(daily("unused"))
    used = store.policies.create(daily("used"))
    store.runs.open(used.id, SLOT)

    store.policies.delete(unused.id)
    with pytest.raises(Conflict):
        store.policies.delete(used.id)

    assert [p.name for p in store.policies.all()] == ["used"]
    with pytest.raises(NotFound):
        store.policies.get(unused.id)


def test_a_slot_gets_one_run_however_often_it_is_opened(store):
    policy = store.policies.create(daily())

    first = store.runs.open(policy.id, SLOT)
    again = store.runs.open(policy.id, SLOT)

    assert again == first
    assert (first.state, first.scheduled_for) == (RunState.RUNNING, SLOT)
    assert store.runs.of_policy(policy.id) == [first]


def test_a_run_for_an_unknown_policy_is_refused(store):
    with pytest.raises(NotFound):
        store.runs.open("no-such-policy", SLOT)


def test_runs_are_listed_latest_slot_first_and_finish_once(store):
    lease = store.leases.acquire("controller", "a", duration=30)
    policy = store.policies.create(daily())
    early = store.runs.open(policy.id, SLOT)
    late = store.runs.open(policy.id, SLOT.replace(day=2))
    store.jobs.create(JobSpec(JobKind.SNAPSHOT, "kvm-1", run_id=early.id))

    finished = store.runs.finish(lease, early.id, RunState.PARTIAL, "1 of 2 volumes failed")

    assert [r.id for r in store.runs.of_policy(policy.id)] == [late.id, early.id]
    assert (finished.state, finished.error) == (RunState.PARTIAL, "1 of 2 volumes failed")
    assert finished.finished_at is not None
    assert len(store.jobs.find(run_id=early.id)) == 1
    with pytest.raises(StaleClaim):
        store.runs.finish(lease, early.id, RunState.SUCCEEDED)
