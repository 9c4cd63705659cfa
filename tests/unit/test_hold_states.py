"""The group hold's state machine: each row of holds.TRANSITIONS reached through the method
that makes it, each transition logged, and every event the table has no row for refused."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from agent.errors import OperationFailed, Precondition
from agent.operations import holds
from agent.operations.holds import GroupHold, HoldEvent, HoldState, InvalidTransition
from tests.unit.fakes import FakeGuest


class Guest(FakeGuest):
    """Freezes as told: `during_freeze` runs inside the freeze call (the hold's state seen
    then is kept), `reports` is what the status says right after it."""

    def __init__(self, stuck_frozen: bool = False) -> None:
        super().__init__(stuck_frozen)
        self.hold: GroupHold | None = None
        self.seen: list[HoldState] = []
        self.during_freeze = lambda: None
        self.reports: str | None = None

    def freeze(self) -> int:
        assert self.hold is not None
        self.seen.append(self.hold.state)
        self.during_freeze()
        return super().freeze()

    def freeze_status(self) -> str:
        return self.reports or super().freeze_status()


MADE: list[GroupHold] = []


def new_hold(guest: Guest | None = None) -> tuple[GroupHold, Guest]:
    guest = guest or Guest()
    hold = GroupHold("vm", "g1", "job", 60.0, guest, lambda: 100.0, lambda h: None)
    guest.hold = hold
    MADE.append(hold)
    return hold, guest


@pytest.fixture(autouse=True)
def no_watchdog_outlives_its_test() -> Iterator[None]:
    yield
    while MADE:
        MADE.pop().mark_released("test teardown")


def test_a_new_hold_is_ready_in_force_and_not_frozen():
    hold, _ = new_hold()

    assert hold.state == HoldState.READY
    assert not hold.frozen and not hold.may_be_frozen and hold.released_by is None


def test_ready_freeze_is_freezing_then_confirm_frozen_is_frozen():
    hold, guest = new_hold()

    hold.freeze()

    assert guest.seen == [HoldState.FREEZING]  # the freeze is asked for in FREEZING
    assert hold.state == HoldState.FROZEN and hold.frozen and hold.may_be_frozen


def test_a_freeze_the_guest_does_not_confirm_stays_freezing():
    hold, guest = new_hold()
    guest.reports = "thawed"

    with pytest.raises(OperationFailed, match="reports 'thawed' right after the freeze"):
        hold.freeze()

    assert hold.state == HoldState.FREEZING and hold.may_be_frozen and not hold.frozen


def test_ready_release_is_thawed_nothing_was_frozen():
    hold, guest = new_hold()

    assert hold.mark_released("ThawGroup")

    assert hold.state == HoldState.THAWED and hold.released_by == "ThawGroup"
    assert hold.thaw() is None and guest.thaws == 0
    with pytest.raises(Precondition, match="ended before its freeze"):
        hold.freeze()
    assert guest.seen == []


def test_freezing_release_is_released_freezing_and_confirm_frozen_then_released_frozen():
    hold, guest = new_hold()
    during: list[HoldState] = []

    def released_meanwhile() -> None:
        hold.mark_released(holds.WATCHDOG)  # the watchdog fires during the freeze call
        during.append(hold.state)

    guest.during_freeze = released_meanwhile

    hold.freeze()

    assert during == [HoldState.RELEASED_FREEZING]
    assert hold.state == HoldState.RELEASED_FROZEN and hold.frozen
    with pytest.raises(Precondition, match="watchdog thawed"):
        hold.ensure_in_force()


def test_released_freezing_confirm_thawed_is_thawed():
    hold, guest = new_hold()
    guest.reports = "thawed"
    with pytest.raises(OperationFailed):
        hold.freeze()
    hold.mark_released("failed freeze")
    assert hold.state == HoldState.RELEASED_FREEZING
    guest.reports = None

    assert hold.thaw() is not None

    assert hold.state == HoldState.THAWED and not hold.may_be_frozen and guest.thaws == 1


def test_frozen_release_is_released_frozen_and_confirm_thawed_is_thawed():
    hold, guest = new_hold()
    hold.freeze()

    assert hold.mark_released("ThawGroup")
    assert hold.state == HoldState.RELEASED_FROZEN and hold.may_be_frozen
    assert not hold.mark_released("again")  # a second release changes nothing
    assert hold.released_by == "ThawGroup"

    assert hold.thaw() == 0.0  # the fake clock stands still
    assert hold.state == HoldState.THAWED and not guest.frozen


def test_a_thaw_that_fails_stays_released_frozen():
    hold, _ = new_hold(Guest(stuck_frozen=True))
    hold.freeze()
    hold.mark_released("ThawGroup")

    with pytest.raises(OperationFailed, match="may still be frozen"):
        hold.thaw()

    assert hold.state == HoldState.RELEASED_FROZEN and hold.may_be_frozen


def test_thawed_end_is_ended_once():
    hold, _ = new_hold()
    hold.freeze()
    assert not hold.claim_outcome()  # in force, frozen: nobody writes the outcome yet
    hold.mark_released("ThawGroup")
    assert not hold.claim_outcome()  # released, still frozen
    hold.thaw()

    assert hold.claim_outcome()
    assert hold.state == HoldState.ENDED
    assert not hold.claim_outcome()


def test_every_row_of_the_table_is_a_test_above():
    assert set(holds.TRANSITIONS) == {
        (HoldState.READY, HoldEvent.FREEZE),
        (HoldState.FREEZING, HoldEvent.CONFIRM_FROZEN),
        (HoldState.READY, HoldEvent.RELEASE),
        (HoldState.FREEZING, HoldEvent.RELEASE),
        (HoldState.FROZEN, HoldEvent.RELEASE),
        (HoldState.RELEASED_FREEZING, HoldEvent.CONFIRM_FROZEN),
        (HoldState.RELEASED_FREEZING, HoldEvent.CONFIRM_THAWED),
        (HoldState.RELEASED_FROZEN, HoldEvent.CONFIRM_THAWED),
        (HoldState.THAWED, HoldEvent.END),
    }


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in itertools.product(HoldState, HoldEvent) if pair not in holds.TRANSITIONS],
)
def test_an_event_the_table_has_no_row_for_raises_and_changes_nothing(
    state: HoldState, event: HoldEvent
):
    hold, _ = new_hold()
    hold._current = state

    with pytest.raises(InvalidTransition, match=f"no transition from {state} on {event}"):
        hold._apply(event, "test")

    assert hold.state == state


def test_each_transition_is_logged_with_domain_group_states_and_why(
    caplog: pytest.LogCaptureFixture,
):
    hold, _ = new_hold()
    with caplog.at_level(logging.INFO, logger=holds.__name__):
        hold.freeze()
        hold.mark_released("ThawGroup")
        hold.thaw()
        hold.claim_outcome()

    moves = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert moves == [
        "hold of domain vm (group g1): ready -> freezing (freeze: FreezeForGroup)",
        "hold of domain vm (group g1): freezing -> frozen (confirm-frozen: 1 filesystems)",
        "hold of domain vm (group g1): frozen -> released-frozen (release: ThawGroup)",
        "hold of domain vm (group g1): released-frozen -> thawed (confirm-thawed: ThawGroup)",
        "hold of domain vm (group g1): thawed -> ended (end: the job's final state)",
    ]
