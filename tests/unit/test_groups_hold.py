"""A group hold on the agent: the watchdog thaws at the hold's deadline, a release runs after a
freeze still in flight (never ahead of it), and a member's snapshot learns whether the hold
was in force at its switch."""

from __future__ import annotations

import threading
import time

import pytest

from agent.errors import OperationFailed, Precondition
from agent.operations.holds import WATCHDOG, GroupHold
from tests.unit.test_freeze_window import FakeGuest


class SlowFreezeGuest(FakeGuest):
    def __init__(self) -> None:
        super().__init__()
        self.freezing = threading.Event()
        self.go_on = threading.Event()

    def freeze(self) -> int:
        self.freezing.set()
        self.go_on.wait(5)
        return super().freeze()


def hold_of(guest: FakeGuest, seconds: float = 5.0, **options: object) -> GroupHold:
    def on_deadline(hold: GroupHold) -> None:
        hold.mark_released(WATCHDOG)
        hold.thaw()

    return GroupHold("vm", "g", "job", seconds, guest, time.monotonic, on_deadline, **options)  # type: ignore[arg-type]


def test_the_watchdog_thaws_at_the_deadline_and_the_hold_is_no_longer_in_force():
    guest = FakeGuest()
    hold = hold_of(guest, seconds=0.2)
    hold.freeze()
    assert guest.frozen and hold.frozen
    hold.ensure_in_force()
    assert guest.thawed.wait(5), "the watchdog did not thaw"
    assert hold.released_by == WATCHDOG and not hold.frozen
    with pytest.raises(Precondition) as ended:
        hold.ensure_in_force()
    assert ended.value.reason == "FREEZE_DEADLINE_EXCEEDED"
    assert not hold.mark_released("ThawGroup")  # ThawGroup afterwards: nothing more to do
    assert hold.thaw() is None and guest.thaws == 1


def test_a_release_during_the_freeze_thaws_after_it_never_before():
    guest = SlowFreezeGuest()
    hold = hold_of(guest)
    freezing = threading.Thread(target=hold.freeze)
    freezing.start()
    assert guest.freezing.wait(5)
    released = threading.Thread(target=lambda: (hold.mark_released("ThawGroup"), hold.thaw()))
    released.start()
    time.sleep(0.05)
    assert guest.thaws == 0  # waits for the freeze call in flight
    guest.go_on.set()
    freezing.join(5)
    released.join(5)
    assert not guest.frozen and guest.thaws == 1


def test_one_snapshot_job_works_under_a_hold_and_the_domain_lock_returns_after_both_end():
    unlocked = threading.Event()
    hold = hold_of(FakeGuest())
    hold.unlock = unlocked.set
    hold.freeze()
    hold.use("snap-1")
    with pytest.raises(Precondition) as in_use:
        hold.use("snap-2")
    assert in_use.value.reason == "GROUP_HOLD_IN_USE"
    hold.mark_released("ThawGroup")
    hold.thaw()
    hold.unlock_if_unused()
    assert not unlocked.is_set()  # the snapshot job still works under the domain lock
    hold.done()
    assert unlocked.is_set()
    with pytest.raises(Precondition) as released:
        hold.use("snap-3")
    assert released.value.reason == "GROUP_HOLD_RELEASED"


def test_a_guest_that_stays_frozen_is_an_error_unless_its_domain_is_gone():
    stuck = FakeGuest(stuck_frozen=True)
    hold = hold_of(stuck)
    hold.freeze()
    hold.mark_released("ThawGroup")
    with pytest.raises(OperationFailed) as still:
        hold.thaw()
    assert still.value.reason == "GUEST_STILL_FROZEN"
    gone = hold_of(FakeGuest(stuck_frozen=True), gone=lambda: True)
    gone.freeze()
    gone.mark_released("ThawGroup")
    assert gone.thaw() is not None and not gone.frozen
