"""Retention: the oldest of a policy's usable snapshots of a volume go first; others' snapshots,
transitional and failed ones are never touched; the newest always stays; CloudStack's
snapshot.max.* caps bound maxsnaps as CloudStack does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.policies import (
    Policy,
    RetentionCaps,
    RetentionError,
    Schedule,
    Selector,
    SnapshotRecord,
    decide,
)
from controller.policies.retention import Skip

T0 = datetime(2024, 5, 1, 2, 30, tzinfo=UTC)
VOLUME = "vol-1"
POLICY = "daily"


def snap(
    name: str,
    day: int,
    state: str = "BackedUp",
    *,
    policy: str | None = POLICY,
    volume: str = VOLUME,
) -> SnapshotRecord:
    return SnapshotRecord(name, volume, T0 + timedelta(days=day), state, policy)


def ids(records: tuple[SnapshotRecord, ...]) -> list[str]:
    return [r.id for r in records]


def test_the_oldest_go_first_until_maxsnaps_are_left():
    snapshots = [snap(f"s{d}", d) for d in (3, 0, 4, 1, 2)]  # in no particular order

    decision = decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=3)

    assert ids(decision.delete) == ["s0", "s1"]
    assert ids(decision.kept) == ["s2", "s3", "s4"]
    assert decision.skipped == ()


def test_nothing_goes_while_there_are_no_more_than_maxsnaps():
    snapshots = [snap("s0", 0), snap("s1", 1)]

    assert decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=2).delete == ()
    assert decide([], volume_id=VOLUME, policy_id=POLICY, keep=2).delete == ()


def test_only_this_policys_snapshots_of_this_volume_count_or_go():
    snapshots = [
        snap("manual-old", -10, policy=None),  # a manual snapshot (or CloudStack's own)
        snap("weekly-old", -9, policy="weekly"),  # another policy's
        snap("other-volume", -8, volume="vol-2"),
        snap("s0", 0),
        snap("s1", 1),
        snap("s2", 2),
    ]

    decision = decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=2)

    assert ids(decision.delete) == ["s0"]
    assert ids(decision.kept) == ["s1", "s2"]


@pytest.mark.parametrize(
    "state", ["Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "Copying", "Destroying"]
)
def test_transitional_snapshots_are_neither_counted_nor_deleted(state):
    snapshots = [snap("busy-oldest", -1, state), snap("s0", 0), snap("s1", 1), snap("s2", 2)]

    decision = decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=2)

    assert ids(decision.delete) == ["s0"]  # busy-oldest is older, yet stays
    assert [(s.snapshot.id, s.why) for s in decision.skipped] == [
        ("busy-oldest", Skip.TRANSITIONAL)
    ]


def test_failed_and_unknown_states_are_left_alone_and_destroyed_ones_ignored():
    snapshots = [
        snap("failed", -3, "Error"),
        snap("gone", -2, "Destroyed"),
        snap("odd", -1, "Hidden"),
        snap("s0", 0),
    ]

    decision = decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=1)

    assert decision.delete == ()
    assert ids(decision.kept) == ["s0"]
    assert [(s.snapshot.id, s.why) for s in decision.skipped] == [
        ("failed", Skip.FAILED),
        ("odd", Skip.UNKNOWN_STATE),
    ]


def test_the_newest_usable_snapshot_is_never_deleted():
    snapshots = [snap("s0", 0), snap("s1", 1), snap("s2", 2), snap("creating", 3, "Creating")]

    decision = decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=1)

    assert ids(decision.kept) == ["s2"]  # newer "creating" may still fail
    assert ids(decision.delete) == ["s0", "s1"]


def test_snapshots_made_at_the_same_time_go_in_id_order():
    snapshots = [snap("b", 0), snap("a", 0), snap("c", 1)]

    assert ids(decide(snapshots, volume_id=VOLUME, policy_id=POLICY, keep=1).delete) == ["a", "b"]


def test_maxsnaps_below_one_and_naive_times_are_refused():
    with pytest.raises(RetentionError, match="maxsnaps must be at least 1, got 0"):
        decide([], volume_id=VOLUME, policy_id=POLICY, keep=0)
    with pytest.raises(RetentionError, match="created must be aware"):
        SnapshotRecord("s", VOLUME, datetime(2024, 5, 1), "BackedUp", POLICY)


# -- CloudStack's caps: snapshot.max.hourly/daily/weekly/monthly, 8 each by default
# (SnapshotManager's ConfigKeys, 4.19-4.21); retention keeps min(maxsnaps, cap).


def policy(schedule: Schedule, max_snaps: int) -> Policy:
    return Policy("p", "p", schedule, max_snaps, Selector(vms=("web-1",)))


def test_caps_default_to_8_and_bound_what_is_kept():
    caps = RetentionCaps()
    daily = Schedule.cloudstack("DAILY", "30:02")

    assert (caps.hourly, caps.daily, caps.weekly, caps.monthly) == (8, 8, 8, 8)
    assert policy(daily, 5).keep(caps) == 5
    assert policy(daily, 12).keep(caps) == 8
    assert policy(daily, 12).cap_problem(caps) == (
        "maxsnaps 12 exceeds snapshot.max.daily (8); 8 are kept"
    )
    assert policy(daily, 8).cap_problem(caps) is None


def test_each_interval_has_its_own_cap_and_cron_none_unless_set():
    caps = RetentionCaps(hourly=24, daily=7, weekly=4, monthly=12)

    assert policy(Schedule.cloudstack("HOURLY", "0"), 30).keep(caps) == 24
    assert policy(Schedule.cloudstack("WEEKLY", "0:3:1"), 30).keep(caps) == 4
    assert policy(Schedule.cloudstack("MONTHLY", "0:3:1"), 30).keep(caps) == 12
    assert policy(Schedule.cron("0 3 * * *"), 30).keep(caps) == 30
    assert policy(Schedule.cron("0 3 * * *"), 30).keep(RetentionCaps(cron=10)) == 10


def test_a_cap_of_0_means_the_interval_cannot_be_scheduled():
    caps = RetentionCaps(hourly=0)

    with pytest.raises(RetentionError, match=r"snapshot\.max\.hourly is 0"):
        policy(Schedule.cloudstack("HOURLY", "0"), 1).keep(caps)


def test_caps_are_read_from_cloudstack_configuration():
    caps = RetentionCaps.from_config({"snapshot.max.daily": "3", "snapshot.max.monthly": " 12 "})

    assert caps == RetentionCaps(daily=3, monthly=12)
    with pytest.raises(RetentionError, match=r"snapshot.max.weekly = 'many' is not a whole"):
        RetentionCaps.from_config({"snapshot.max.weekly": "many"})
    with pytest.raises(RetentionError, match="must not be negative"):
        RetentionCaps(daily=-1)


def test_a_policy_needs_maxsnaps_of_at_least_one():
    with pytest.raises(RetentionError, match="maxsnaps must be at least 1"):
        policy(Schedule.cloudstack("DAILY", "30:02"), 0)
