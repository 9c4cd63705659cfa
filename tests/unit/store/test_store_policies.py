"""Policies (schedule in CloudStack's form or cron, retention, quiesce, selectors) and their
runs, one per schedule slot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.store import (
    Conflict,
    CronSchedule,
    IntervalSchedule,
    IntervalType,
    JobKind,
    JobSpec,
    NotFound,
    PolicySpec,
    Quiesce,
    RunState,
    Selector,
    StaleClaim,
)

DAILY = IntervalSchedule(IntervalType.DAILY, "30:02", "Europe/Berlin")
SLOT = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)


def daily(name: str = "daily", **options) -> PolicySpec:
    return PolicySpec(
        name,
        DAILY,
        max_snaps=7,
        quiesce=Quiesce.REQUIRED,
        selectors=(Selector.vm("vm-1"), Selector.tag("backup", "daily"), Selector.account("acc")),
        **options,
    )


def test_a_policy_reads_back_as_it_was_given(store):
    created = store.policies.create(daily())

    assert store.policies.get(created.id) == created
    assert (created.name, created.schedule, created.max_snaps, created.quiesce) == (
        "daily",
        DAILY,
        7,
        Quiesce.REQUIRED,
    )
    assert created.selectors == (
        Selector.vm("vm-1"),
        Selector.tag("backup", "daily"),
        Selector.account("acc"),
    )
    assert store.policies.by_name("daily") == created


def test_a_cron_policy_keeps_its_expression_and_time_zone(store):
    cron = CronSchedule("15  */6 * * 1-5", "America/New_York")
    created = store.policies.create(PolicySpec("weekdays", cron, max_snaps=3))

    assert store.policies.get(created.id).schedule == CronSchedule(
        "15 */6 * * 1-5", "America/New_York"
    )


def test_policy_names_are_unique(store):
    store.policies.create(daily())

    with pytest.raises(Conflict):
        store.policies.create(daily())


def test_an_update_replaces_settings_and_selectors(store):
    created = store.policies.create(daily())
    hourly = IntervalSchedule(IntervalType.HOURLY, "05")

    updated = store.policies.update(
        created.id,
        PolicySpec("hourly", hourly, max_snaps=24, selectors=(Selector.volume("vol-9"),)),
    )

    assert (updated.name, updated.schedule, updated.selectors) == (
        "hourly",
        hourly,
        (Selector.volume("vol-9"),),
    )
    assert updated.created_at == created.created_at


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


@pytest.mark.parametrize(
    ("interval", "schedule"),
    [
        (IntervalType.HOURLY, "60"),
        (IntervalType.HOURLY, "5:02"),
        (IntervalType.DAILY, "30"),
        (IntervalType.DAILY, "30:24"),
        (IntervalType.WEEKLY, "0:0:8"),
        (IntervalType.MONTHLY, "0:0:29"),
        (IntervalType.MONTHLY, "a:b:c"),
    ],
)
def test_schedules_cloudstack_would_refuse_are_refused(interval, schedule):
    with pytest.raises(ValueError):
        IntervalSchedule(interval, schedule)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CronSchedule("* * * *"),
        lambda: CronSchedule("* * * * * ; rm"),
        lambda: IntervalSchedule(IntervalType.DAILY, "0:0", "Mars/Olympus"),
        lambda: PolicySpec("p", DAILY, max_snaps=0),
        lambda: Selector.tag("", "x"),
        lambda: Selector.vm(""),
    ],
)
def test_malformed_policy_parts_are_refused(make):
    with pytest.raises(ValueError):
        make()


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
