"""Policies (schedule in CloudStack's form or cron, retention, quiesce, selector) as the store
keeps them, and their runs, one per schedule slot."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from controller.policies import Policy, Quiesce, Schedule, Selector, TagMatch
from controller.store import Conflict, JobKind, JobSpec, NotFound, RunState, StaleClaim, schema
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

    assert created == policy
    assert store.policies.get(policy.id) == policy
    assert store.policies.by_name("daily") == policy
    assert store.policies.by_name("nightly") is None


def test_every_kind_of_selector_value_reads_back_in_its_order(store):
    selector = Selector(
        vms=("vm-2", "vm-1"),
        volumes=("vol-9",),
        tags=(TagMatch("tier", "gold"), TagMatch("backup", "daily")),
        accounts=("bob", "alice"),
        domains=("ROOT",),
    )

    store.policies.create(daily(selector=selector))

    assert store.policies.get("policy-daily").selector == selector


def test_rows_in_the_schemas_encoding_read_as_the_policies_they_stand_for(store):
    made = 1_764_000_000_000  # ms
    row = {"enabled": True, "timezone": "UTC", "created_at": made, "updated_at": made}
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.policies),
            [
                {**row, "id": "p-w", "name": "weekly", "schedule_kind": "interval",
                 "interval_type": "WEEKLY", "schedule": "00:03:1", "max_snaps": 4,
                 "quiesce": "none"},
                {**row, "id": "p-c", "name": "cron", "schedule_kind": "cron",
                 "interval_type": None, "schedule": "0 3 * * 1-5", "max_snaps": 2,
                 "quiesce": "required", "enabled": False},
            ],
        )  # fmt: skip
        conn.execute(
            sa.insert(schema.policy_selectors),
            [
                {"policy_id": "p-w", "kind": "vm", "tag_key": "", "value": "vm-1"},
                {"policy_id": "p-w", "kind": "tag", "tag_key": "backup", "value": "weekly"},
                {"policy_id": "p-w", "kind": "volume", "tag_key": "", "value": "vol-1"},
                {"policy_id": "p-c", "kind": "account", "tag_key": "", "value": "alice"},
            ],
        )

    assert store.policies.all() == [
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
    assert store.policies.created_at("p-w") == to_datetime(made)


def test_a_cron_policy_keeps_its_expression_and_time_zone(store):
    cron = Schedule.cron("15  */6 * * 1-5", "America/New_York")
    created = store.policies.create(Policy("p-1", "weekdays", cron, 3, Selector(vms=("vm-1",))))

    schedule = store.policies.get(created.id).schedule
    assert (schedule.expression, schedule.timezone) == ("15 */6 * * 1-5", "America/New_York")
    assert schedule == Schedule.cron("15 */6 * * 1-5", "America/New_York")


def test_policy_names_are_unique(store):
    store.policies.create(daily())

    with pytest.raises(Conflict):
        store.policies.create(replace(daily(), id="another-id"))


def test_an_update_replaces_settings_and_selectors(store):
    created = store.policies.create(daily())
    born = store.policies.created_at(created.id)
    hourly = replace(
        created,
        name="hourly",
        schedule=Schedule.cloudstack("HOURLY", "05"),
        max_snaps=24,
        selector=Selector(volumes=("vol-9",)),
        enabled=False,
    )

    updated = store.policies.update(hourly)

    assert updated == hourly and store.policies.get(created.id) == hourly
    assert store.policies.created_at(created.id) == born
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
    with pytest.raises(NotFound):
        store.policies.created_at(unused.id)


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
