"""The plan (dry run) over the simulator's seed zone: what runs now and next, per VM on its host,
with quiesce and the deletions retention would make; catch-up after missed times; and what keeps
a policy from running."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from controller.policies import (
    Policy,
    Quiesce,
    RetentionCaps,
    Schedule,
    Selector,
    SnapshotRecord,
    TagMatch,
    plan,
)
from controller.policies.errors import PolicyError
from controller.policies.plan import MISSED_COUNT_LIMIT
from tests.cloudstack_sim import World
from tests.cloudstack_sim.world import Tag
from tests.unit.test_policies_selection import FETCHED_AT, facts_of, inventory_of, seeded_world


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def daily(**changes: object) -> Policy:
    options: dict[str, object] = {
        "id": "p-daily",
        "name": "web and db daily",
        "schedule": Schedule.cloudstack("DAILY", "30:02"),
        "max_snaps": 3,
        "selector": Selector(vms=("web-1", "db-1")),
        "quiesce": Quiesce.REQUIRED,
    }
    options.update(changes)
    return Policy(**options)  # type: ignore[arg-type]


def root_of(world: World, vm: str) -> str:
    return next(
        v.id for v in world.volumes.values() if v.vm and v.vm.name == vm and v.device_id == 0
    )


@pytest.fixture
def world() -> World:
    return seeded_world()


def test_a_due_policy_runs_once_per_vm_on_its_host_with_quiesce_and_expected_deletions(world):
    web_root, db_root = root_of(world, "web-1"), root_of(world, "db-1")
    snapshots = [
        SnapshotRecord("manual", web_root, at("2024-04-01 00:00"), "BackedUp"),
        *(
            SnapshotRecord(
                f"web-{day}", web_root, at(f"2024-04-{day} 02:30"), "BackedUp", "p-daily"
            )
            for day in (28, 29, 30)
        ),
        SnapshotRecord("db-30", db_root, at("2024-04-30 02:30"), "BackedUp", "p-daily"),
    ]

    result = plan(
        [daily()],
        inventory_of(world),
        at("2024-05-01 02:30"),
        snapshots=snapshots,
        last_runs={"p-daily": at("2024-04-30 02:30")},
    )

    (p,) = result.policies
    assert (p.due, p.when, p.slot, p.missed) == (
        True,
        at("2024-05-01 02:30"),
        at("2024-05-01 02:30"),
        0,
    )
    assert (p.next_run, p.keep, p.quiesce) == (at("2024-05-02 02:30"), 3, Quiesce.REQUIRED)
    assert p.schedule == "daily at 02:30 UTC (DAILY 30:02)"
    assert [(r.vm_name, r.instance_name, r.host_name) for r in p.runs] == [
        ("db-1", "i-3-11-VM", "kvm-2"),
        ("web-1", "i-2-10-VM", "kvm-1"),
    ]
    db_run, web_run = p.runs
    assert [(v.volume_name, v.delete, v.kept) for v in web_run.volumes] == [
        ("ROOT-10", ("web-28",), 3)  # 3 kept: 29, 30 and the new one; "manual" is not its
    ]
    assert [(v.volume_name, v.delete, v.kept) for v in db_run.volumes] == [("ROOT-11", (), 2)]
    assert [str(e) for e in p.excluded] == [
        "DATA-11-1 of db-1: volume DATA-11-1 is Migrating: CloudStack is working on it",
        "DATA-10-1 of web-1: volume DATA-10-1 is Snapshotting: CloudStack is working on it",
    ]
    assert (p.notes, p.problems) == ((), ())
    assert result.due == (p,)
    assert (result.now, result.inventory_at) == (at("2024-05-01 02:30"), FETCHED_AT)


def test_times_missed_since_the_last_run_make_it_due_once_now(world):
    now = at("2024-05-01 12:00")

    (p,) = plan(
        [daily()], inventory_of(world), now, last_runs={"p-daily": at("2024-04-27 02:30")}
    ).policies

    assert (p.due, p.when, p.slot, p.missed) == (True, now, at("2024-04-28 02:30"), 3)
    assert p.next_run == at("2024-05-02 02:30")


def test_after_its_run_a_policy_waits_for_its_next_time(world):
    (p,) = plan(
        [daily()],
        inventory_of(world),
        at("2024-05-01 12:00"),
        last_runs={"p-daily": at("2024-05-01 02:30")},
    ).policies

    assert (p.due, p.when, p.slot, p.missed) == (False, at("2024-05-02 02:30"), None, 0)
    assert [r.vm_name for r in p.runs] == ["db-1", "web-1"]  # what would run then


def test_a_policy_that_never_ran_is_not_due_before_its_next_time(world):
    (p,) = plan([daily()], inventory_of(world), at("2024-05-01 12:00")).policies

    assert (p.due, p.when) == (False, at("2024-05-02 02:30"))


def test_a_long_outage_is_counted_up_to_a_limit_and_quickly(world):
    hourly = daily(schedule=Schedule.cloudstack("HOURLY", "0"))
    started = time.monotonic()

    (p,) = plan(
        [hourly],
        inventory_of(world),
        at("2024-05-01 12:30"),
        last_runs={"p-daily": at("2023-05-01 00:00")},
    ).policies

    assert time.monotonic() - started < 1.0
    assert (p.due, p.slot, p.missed) == (True, at("2023-05-01 01:00"), MISSED_COUNT_LIMIT)


def test_a_disabled_policy_shows_when_it_would_run_but_runs_nothing(world):
    (p,) = plan(
        [daily(enabled=False)],
        inventory_of(world),
        at("2024-05-01 02:30"),
        last_runs={"p-daily": at("2024-04-30 02:30")},
    ).policies

    assert (p.due, p.runs, p.problems) == (False, (), ("disabled",))
    assert p.next_run == at("2024-05-02 02:30")


def test_maxsnaps_above_cloudstacks_cap_is_noted_and_the_cap_kept(world):
    (p,) = plan([daily(max_snaps=12)], inventory_of(world), at("2024-05-01 02:30")).policies

    assert p.keep == 8
    assert p.notes == ("maxsnaps 12 exceeds snapshot.max.daily (8); 8 are kept",)
    assert p.runs


def test_an_interval_capped_at_0_cannot_run(world):
    hourly = daily(schedule=Schedule.cloudstack("HOURLY", "0"))

    (p,) = plan(
        [hourly], inventory_of(world), at("2024-05-01 02:30"), caps=RetentionCaps(hourly=0)
    ).policies

    assert (p.keep, p.runs) == (None, ())
    assert p.problems == ("snapshot.max.hourly is 0: such policies cannot be scheduled",)


def test_a_selector_that_cannot_be_applied_is_a_problem_not_a_guess(world):
    tagged = daily(selector=Selector(tags=(TagMatch("backup", "daily"),)))

    (p,) = plan([tagged], inventory_of(world), at("2024-05-01 02:30")).policies

    assert p.runs == ()
    assert p.problems == ("the selector filters on tags, but no tags were read",)


def test_tags_and_owners_given_as_facts_select(world):
    world.tags.append(Tag("backup", "daily", "UserVm", world.named(world.vms, "web-1").id))
    tagged = daily(selector=Selector(tags=(TagMatch("backup", "daily"),), accounts=("admin",)))

    (p,) = plan(
        [tagged], inventory_of(world), at("2024-05-01 02:30"), facts=facts_of(world)
    ).policies

    assert [r.vm_name for r in p.runs] == ["web-1"]


def test_a_policy_that_selects_nothing_runnable_says_so_and_why(world):
    (p,) = plan(
        [daily(selector=Selector(vms=("batch-1", "ghost")))],
        inventory_of(world),
        at("2024-05-01 02:30"),
    ).policies

    assert p.runs == ()
    assert p.notes == (
        "no VM with id or name 'ghost'",
        "selects no volume that can be snapshotted now",
    )
    assert [str(e) for e in p.excluded] == [
        "ROOT-12 of batch-1: VM batch-1 is Stopped and on no host"
    ]


def test_policies_due_on_the_same_vm_at_once_are_noted_and_due_ones_come_first(world):
    last = {"p-daily": at("2024-04-30 02:30"), "p-web": at("2024-04-30 02:30")}
    web_too = daily(id="p-web", name="web extra", selector=Selector(vms=("web-1",)))
    weekly = daily(id="p-weekly", name="weekly", schedule=Schedule.cloudstack("WEEKLY", "0:4:1"))

    result = plan(
        [weekly, web_too, daily()], inventory_of(world), at("2024-05-01 02:30"), last_runs=last
    )

    assert [p.policy_id for p in result.policies] == ["p-daily", "p-web", "p-weekly"]
    by_id = {p.policy_id: p for p in result.policies}
    assert by_id["p-daily"].notes == ("also due on the same VMs: web extra",)
    assert by_id["p-web"].notes == ("also due on the same VMs: web and db daily",)
    assert by_id["p-weekly"].notes == ()
    assert [p.policy_id for p in result.due] == ["p-daily", "p-web"]


def test_transitional_snapshots_are_kept_in_the_expected_deletions(world):
    web_root = root_of(world, "web-1")
    snapshots = [
        SnapshotRecord("backing-up", web_root, at("2024-04-20 02:30"), "BackingUp", "p-daily"),
        *(
            SnapshotRecord(f"web-{d}", web_root, at(f"2024-04-{d} 02:30"), "BackedUp", "p-daily")
            for d in (27, 28, 29, 30)
        ),
    ]

    (p,) = plan(
        [daily(selector=Selector(vms=("web-1",)))],
        inventory_of(world),
        at("2024-05-01 02:30"),
        snapshots=snapshots,
    ).policies

    assert p.runs[0].volumes[0].delete == ("web-27", "web-28")


def test_the_plan_is_a_pure_function_of_its_inputs(world):
    inventory = inventory_of(world)
    args = ([daily()], inventory, at("2024-05-01 02:30"))

    assert plan(*args, last_runs={"p-daily": at("2024-04-30 02:30")}) == plan(
        *args, last_runs={"p-daily": at("2024-04-30 02:30")}
    )
    with pytest.raises(PolicyError, match="aware"):
        plan([daily()], inventory, datetime(2024, 5, 1, 2, 30))


def test_a_cron_policy_in_a_zone_with_dst_plans_in_utc(world):
    policy = daily(schedule=Schedule.cron("30 2 * * 0", "Europe/Berlin"))  # Sundays 02:30

    (p,) = plan([policy], inventory_of(world), at("2024-03-30 12:00")).policies

    assert p.next_run == at("2024-03-31 01:30")  # 03:30 CEST: 02:30 did not exist that night
    assert p.when - at("2024-03-30 12:00") == timedelta(hours=13, minutes=30)


def test_quiesce_and_ids_are_checked_when_a_policy_is_made():
    assert Quiesce.parse(" Required ") is Quiesce.REQUIRED
    assert daily().quiesce is Quiesce.REQUIRED and daily(quiesce=Quiesce.NONE).quiesce == "none"
    with pytest.raises(PolicyError, match="quiesce 'always': required, preferred or none"):
        Quiesce.parse("always")
    with pytest.raises(PolicyError, match="a policy needs an id"):
        daily(id=" ")


@pytest.mark.parametrize("name", ["", "n" * 256])
def test_a_policy_needs_a_name_the_store_can_keep(name):
    assert daily(name="n" * 255).name == "n" * 255
    with pytest.raises(PolicyError, match="a name of at most 255 characters"):
        daily(name=name)
