"""A group hold on the agent: the watchdog thaws at the hold's deadline (and again until the
guest is thawed or gone), a release runs after a freeze still in flight (never ahead of it), a
retried FreezeForGroup waits for the first one's outcome, one snapshot job per hold, and a
member's snapshot learns whether the guest was still frozen at its switch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.admission import Admission, AdmissionConfig
from agent.config import AgentConfig
from agent.errors import NotAdmitted, OperationFailed, Precondition, Unavailable
from agent.hypervisor.ports import Guest as GuestPort
from agent.jobs import JobState, Journal
from agent.model import (
    Consistency,
    DomainState,
    GroupHoldStatus,
    SnapshotRequest,
    SnapshotResult,
)
from agent.operations import group, holds, snapshot
from agent.operations.holds import WATCHDOG, GroupHold, Holds, keep_thawing
from agent.operations.jobrun import to_json
from agent.operations.services import Services
from tests.unit.fakes import FakeGuest, UnusedHost, UnusedRbd


class SlowFreezeGuest(FakeGuest):
    def __init__(self) -> None:
        super().__init__()
        self.freezing = threading.Event()
        self.go_on = threading.Event()

    def freeze(self) -> int:
        self.freezing.set()
        self.go_on.wait(5)
        return super().freeze()


def hold_of(
    guest: FakeGuest, seconds: float = 5.0, gone: Callable[[], bool] = lambda: False
) -> GroupHold:
    def on_deadline(hold: GroupHold) -> None:
        hold.mark_released(WATCHDOG)
        hold.thaw()

    return GroupHold("vm", "g", "job", seconds, guest, time.monotonic, on_deadline, gone)


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


# --- the agent's group operations on fakes: a journal in a temporary directory, a fake host
# (one running domain "vm") and a fake guest agent.


class Guest(FakeGuest):
    """A guest agent that stays frozen through its first `stuck_thaws` thaw calls, and whose
    ping can be made slow (`on_ping`)."""

    def __init__(self, stuck_thaws: int = 0, on_ping: Callable[[], None] = lambda: None):
        super().__init__()
        self.stuck_thaws = stuck_thaws
        self.on_ping = on_ping

    def ping(self) -> None:
        self.on_ping()

    def thaw(self) -> int:
        if self.stuck_thaws > 0:
            self.stuck_thaws -= 1
            self.thaws += 1
            return 1
        return super().thaw()


class FakeHost(UnusedHost):
    def __init__(self, holds: Holds) -> None:
        self.uuid = "uuid-1"
        self.holds = holds  # libvirt is never called under the holds' lock

    def _not_under_the_holds_lock(self) -> None:
        assert not self.holds.lock.locked(), "a libvirt call under the holds' lock"

    def exists(self, name: str) -> bool:
        return name == "vm"

    def state(self, name: str) -> tuple[DomainState, int]:
        self._not_under_the_holds_lock()
        return DomainState.RUNNING, 1

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        self._not_under_the_holds_lock()
        return [("vm", self.uuid, DomainState.RUNNING)]


class FakeServices(Services):
    guest: Guest

    @property
    def fake_host(self) -> FakeHost:
        assert isinstance(self.host, FakeHost)
        return self.host

    def guest_agent(self, domain: str) -> GuestPort:
        self.fake_host._not_under_the_holds_lock()
        return self.guest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[FakeServices]:
    holds = Holds()
    services = FakeServices(
        config=AgentConfig(state_dir=tmp_path, guest_agent_timeout=1),
        host=FakeHost(holds),
        rbd=UnusedRbd(),
        journal=Journal(tmp_path / "journal.db"),
        holds=holds,
    )
    services.guest = Guest()
    yield services
    for hold in list(holds.by_domain.values()):
        hold.mark_released("test teardown")  # no watchdog outlives its test
    services.journal.close()


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_keep_thawing_backs_off_1_2_4_then_every_5_s_until_the_thaw_is_confirmed():
    slept: list[float] = []
    failures = iter([True] * 6 + [False])

    def release() -> None:
        if next(failures):
            raise OperationFailed("still frozen", reason="GUEST_STILL_FROZEN")

    assert keep_thawing(hold_of(FakeGuest()), release, slept.append) == 6
    assert slept == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_a_watchdog_thaw_that_fails_is_tried_again_until_the_guest_reports_thawed(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(holds, "THAW_RETRY_DELAYS", (0.01, 0.02))
    svc.guest = Guest(stuck_thaws=7)  # the watchdog's three attempts and the next, and one
    held = group.freeze(svc, "vm", "g", 0.1)
    assert svc.guest.thawed.wait(5), "the guest was left frozen after the watchdog's thaw"
    hold = svc.holds.get("vm")
    assert hold is not None
    wait_until(lambda: svc.journal.get(held.job_id).error_reason == "FREEZE_DEADLINE_EXCEEDED")
    job = svc.journal.get(held.job_id)
    assert job.state == JobState.FAILED
    assert [s.name for s in job.steps].count("watchdog-fired") == 1
    assert job.step("thawed") is not None and not hold.may_be_frozen
    assert svc.guest.thaws == 8 and not svc.guest.frozen


def test_the_thaw_retries_end_when_the_domain_was_replaced(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(holds, "THAW_RETRY_DELAYS", (0.01,))
    svc.guest = Guest(stuck_thaws=10**6)
    group.freeze(svc, "vm", "g", 0.1)
    hold = svc.holds.get("vm")
    assert hold is not None
    time.sleep(0.3)
    assert hold.may_be_frozen  # still tried: the same domain may still be frozen
    svc.fake_host.uuid = "uuid-2"  # restarted: another domain now
    wait_until(lambda: not hold.may_be_frozen)
    thaws = svc.guest.thaws
    time.sleep(0.1)
    assert svc.guest.thaws == thaws, "thaws went on after the domain was gone"


def test_release_all_at_shutdown_thaws_a_released_hold_whose_thaw_failed(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(group, "_keep_thawing", lambda svc, hold: None)  # shutdown alone
    svc.guest = Guest(stuck_thaws=3)
    held = group.freeze(svc, "vm", "g", 5)
    with pytest.raises(OperationFailed):
        group.thaw(svc, "vm", "g")
    assert svc.guest.frozen and svc.holds.active() == []
    group.release_all(svc, "agent shutdown")
    assert not svc.guest.frozen
    job = svc.journal.get(held.job_id)
    assert job.state == JobState.SUCCEEDED and job.step("thawed") is not None


def test_the_reported_deadline_counts_from_when_the_watchdog_is_armed(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    clock = Clock()
    svc.monotonic = clock
    svc.wall_clock = lambda: clock.now + 5000.0

    def slow_ping() -> None:
        clock.now += 8.0  # a guest agent slow to answer before the freeze

    svc.guest = Guest(on_ping=slow_ping)
    armed_at: list[float] = []
    freeze = svc.guest.freeze

    def freeze_noting_the_clock() -> int:
        armed_at.append(clock.now)
        return freeze()

    monkeypatch.setattr(svc.guest, "freeze", freeze_noting_the_clock)
    held = group.freeze(svc, "vm", "g", 20.0)
    hold = svc.holds.get("vm")
    assert hold is not None and hold._timer.is_alive()
    assert armed_at == [1008.0]
    assert hold.deadline == 1008.0 + 20.0
    assert held.remaining_seconds == 20.0
    assert held.held_until == 1008.0 + 5000.0 + 20.0
    group.thaw(svc, "vm", "g")


def test_a_retried_freeze_during_the_first_ones_checks_waits_for_its_outcome(
    svc: FakeServices,
):
    pinged, go_on = threading.Event(), threading.Event()

    def slow_ping() -> None:
        pinged.set()
        go_on.wait(5)

    svc.guest = Guest(on_ping=slow_ping)
    answers: dict[str, object] = {}
    first = threading.Thread(target=lambda: answers.update(first=group.freeze(svc, "vm", "g", 5)))
    first.start()
    assert pinged.wait(5)
    retry = threading.Thread(target=lambda: answers.update(retry=group.freeze(svc, "vm", "g", 5)))
    retry.start()
    retry.join(0.2)
    assert retry.is_alive(), "the retry answered while the first freeze was under way"
    go_on.set()
    first.join(5)
    retry.join(5)
    one, two = answers["first"], answers["retry"]
    assert isinstance(one, GroupHoldStatus) and isinstance(two, GroupHoldStatus)
    assert one.frozen and two.frozen and one.job_id == two.job_id
    group.thaw(svc, "vm", "g")


def test_a_retried_freeze_waits_a_bounded_time_then_says_the_first_is_in_progress(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(group, "SETTLE_MARGIN", 0.1)
    svc.config = AgentConfig(state_dir=svc.config.state_dir, guest_agent_timeout=0)
    pinged, go_on = threading.Event(), threading.Event()

    def slow_ping() -> None:
        pinged.set()
        go_on.wait(5)

    svc.guest = Guest(on_ping=slow_ping)
    first = threading.Thread(target=group.freeze, args=(svc, "vm", "g", 5))
    first.start()
    try:
        assert pinged.wait(5)
        with pytest.raises(Unavailable) as in_progress:
            group.freeze(svc, "vm", "g", 5)
        assert in_progress.value.reason == "GROUP_FREEZE_IN_PROGRESS"
    finally:
        go_on.set()
        first.join(5)
    group.thaw(svc, "vm", "g")
    assert not svc.guest.frozen


def test_a_second_snapshot_job_under_a_used_hold_is_refused_also_after_the_first_ended(
    svc: FakeServices,
):
    group.freeze(svc, "vm", "g", 5)
    hold = group.held(svc, "vm", "g")
    with group.working_under(hold, "snap-1"):
        with pytest.raises(Precondition) as in_use:
            group.held(svc, "vm", "g")
        assert in_use.value.reason == "GROUP_HOLD_IN_USE"
    with pytest.raises(Precondition) as used:
        group.held(svc, "vm", "g")  # refused before a job exists: its key stays unused
    assert used.value.reason == "GROUP_HOLD_USED"
    with pytest.raises(Precondition) as used_in_job:
        hold.use("snap-2")  # a request that raced past held()
    assert used_in_job.value.reason == "GROUP_HOLD_USED"
    group.thaw(svc, "vm", "g")
    assert not svc.guest.frozen


def test_a_guest_thawed_behind_the_agents_back_is_not_confirmed_frozen():
    guest = FakeGuest()
    hold = hold_of(guest)
    hold.freeze()
    hold.confirm_frozen()
    guest.frozen = False  # `virsh domfsthaw`, a guest reboot, a VSS auto-thaw
    with pytest.raises(Precondition) as thawed:
        hold.confirm_frozen()
    assert thawed.value.reason == "GUEST_THAWED_DURING_GROUP"
    hold.mark_released("ThawGroup")
    hold.thaw()


def test_a_group_members_job_is_refused_admission_at_once_instead_of_waiting():
    slept: list[float] = []
    admission = Admission(
        AdmissionConfig(max_jobs=0, wait_timeout=60, poll_interval=1),
        lambda: None,
        lambda pools: {},
        sleep=slept.append,
    )
    steps: list[tuple[str, dict[str, object]]] = []
    with (
        pytest.raises(NotAdmitted) as refused,
        admission.admitted("job", {"pool"}, lambda s, **d: steps.append((s, d)), wait=False),
    ):
        pytest.fail("admitted")
    assert slept == [] and refused.value.retry_after == 1
    assert [s for s, _ in steps] == ["admission-refused"]


def test_a_known_idempotency_key_returns_its_job_before_any_check(svc: FakeServices):
    result = SnapshotResult("job-1", "vm", Consistency.APPLICATION, 0.01, ())
    svc.journal.start("job-1", "snapshot", "vm", {}, "key-1")
    svc.journal.succeed("job-1", to_json(result))
    svc.host = UnusedHost()  # any check would fail: none is made
    started: list[str] = []
    request = SnapshotRequest(domain="vm", idempotency_key="key-1", group_id="ended-group")
    assert snapshot.create(svc, request, started.append) == result
    assert started == ["job-1"]


def test_each_transition_of_a_hold_is_a_step_of_its_job(svc: FakeServices):
    held = group.freeze(svc, "vm", "g", 5)
    group.thaw(svc, "vm", "g")

    job = svc.journal.get(held.job_id)
    transitions = [
        (s.detail["before"], s.detail["event"], s.detail["after"])
        for s in job.steps
        if s.name == "hold-transition"
    ]
    assert transitions == [
        ("ready", "freeze", "freezing"),
        ("freezing", "confirm-frozen", "frozen"),
        ("frozen", "release", "released-frozen"),
        ("released-frozen", "confirm-thawed", "thawed"),
        ("thawed", "end", "ended"),
    ]
    last = job.step("hold-transition")
    assert last is not None and last.detail["why"] == "the job's final state"
    assert job.state == JobState.SUCCEEDED


def test_a_journal_that_cannot_take_a_transition_does_not_stop_the_thaw(
    svc: FakeServices, monkeypatch: pytest.MonkeyPatch
):
    held = group.freeze(svc, "vm", "g", 5)
    record = svc.journal.record

    def full_for_transitions(job_id: str, step: str, /, **detail: object) -> None:
        if step == "hold-transition":
            raise OSError("No space left on device")
        record(job_id, step, **detail)

    monkeypatch.setattr(svc.journal, "record", full_for_transitions)
    group.thaw(svc, "vm", "g")

    assert not svc.guest.frozen
    assert svc.journal.get(held.job_id).state == JobState.SUCCEEDED
