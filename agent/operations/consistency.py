"""The window in which a snapshot's parts are taken, and the consistency it gives them.

Application-consistent: the guest's filesystems were frozen through its agent. Otherwise
crash-consistent, and then a domain with several disks is paused for the window so all its
disks are cut at the same instant.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from agent import faults, steps
from agent.errors import HostsnapError, Precondition
from agent.jobs import Job
from agent.model import Consistency, DomainState, Quiesce, SnapshotRequest
from agent.operations import pause
from agent.operations.holds import GroupHold
from agent.operations.quiesce import (
    STILL_FROZEN,
    Freeze,
    FreezeWindow,
    Frozen,
    Held,
    Step,
    Thawed,
)
from agent.operations.services import Services

log = logging.getLogger(__name__)


# The "thawed" step of `hostsnap-agent --thaw-after-exit` (agent/thaw_after_exit.py).
THAWED_AFTER_EXIT = "thaw-after-exit"


class Window:
    """The consistency a snapshot got, and how long the guest was frozen."""

    def __init__(self, consistency: Consistency, note: str = "", frozen: float = 0.0) -> None:
        self.consistency = consistency
        self.note = note
        self.frozen_seconds = frozen

    @classmethod
    def for_recovered(cls, job: Job, now: float) -> Window:
        """A snapshot the agent took before it died: application-consistent only when the
        freeze was confirmed and no watchdog thawed the guest before the snapshot."""
        frozen_at = steps.when(job, Step.FROZEN)
        if frozen_at is not None and not steps.reached(job, Step.WATCHDOG_FIRED):
            thaws = steps.read_all(job, Step.THAWED, Thawed)
            first = thaws[0] if thaws else Thawed()
            if first.switch_seen is False:
                note = "completed by recovery; the guest was thawed before its disks switched"
                return cls(Consistency.CRASH, note)
            if first.frozen_seconds is not None:  # by the job, or after the agent's exit
                note = "completed by recovery"
                if first.by == THAWED_AFTER_EXIT:
                    note += "; the guest was thawed when the agent exited"
                return cls(Consistency.APPLICATION, note, first.frozen_seconds)
            note = "completed by recovery; the guest stayed frozen until the agent restarted"
            return cls(Consistency.APPLICATION, note, now - frozen_at)
        return cls(Consistency.CRASH, "completed by recovery; the guest was not frozen")


@contextlib.contextmanager
def window(
    svc: Services, job_id: str, request: SnapshotRequest, live: bool, disks: int
) -> Iterator[Window]:
    if not live:
        clean = svc.host.shut_off_cleanly(request.domain)
        note = "" if clean else "the domain was not shut down cleanly"
        yield Window(Consistency.APPLICATION if clean else Consistency.CRASH, note)
        return
    freeze = None if request.quiesce == Quiesce.NONE else _freeze(svc, job_id, request)
    if freeze is None:
        note = (
            "quiesce was not requested"
            if request.quiesce == Quiesce.NONE
            else "the guest could not be frozen"
        )
        with _paused_if_several(svc, job_id, request.domain, disks):
            yield Window(Consistency.CRASH, note)
        return
    result = Window(Consistency.APPLICATION)
    try:
        faults.point(faults.Step.AFTER_FREEZE)
        yield result
    finally:
        freeze.close()
        result.frozen_seconds = freeze.frozen_seconds
        svc.observe_freeze(freeze.frozen_seconds)
    if freeze.watchdog_fired:
        message = (
            f"the snapshot took longer than the {svc.config.freeze_deadline:.1f} s freeze "
            "deadline and the guest was thawed before it completed"
        )
        if request.quiesce == Quiesce.REQUIRED:
            raise Precondition(message, reason="FREEZE_DEADLINE_EXCEEDED")
        result.consistency = Consistency.CRASH
        result.note = message


@contextlib.contextmanager
def held(svc: Services, job_id: str, domain: str, hold: GroupHold) -> Iterator[Window]:
    """A consistency group member's window: its guest is frozen by the group's hold, which
    must still be in force once the disks have switched (the hold's release flag is set
    before any thaw of ours), and the guest agent must report the guest frozen then (nobody
    thawed it behind the agent's back: `virsh domfsthaw`, a guest reboot, a Windows VSS
    auto-thaw); otherwise the job fails and its parts are undone."""
    steps.write(svc.journal, job_id, Step.HELD, Held(hold.group_id, hold.job_id))
    hold.ensure_in_force()
    result = Window(Consistency.APPLICATION)
    yield result
    faults.point(faults.Step.GROUP_SNAPSHOT, domain)
    result.frozen_seconds = svc.monotonic() - hold.frozen_at
    hold.confirm_frozen()
    steps.write(svc.journal, job_id, Step.FROZEN_CONFIRMED)


def _freeze(svc: Services, job_id: str, request: SnapshotRequest) -> FreezeWindow | None:
    """A started freeze; None when a `preferred` quiesce falls back to crash consistency."""
    try:
        guest = svc.guest_agent(request.domain)
        # An agent that does not answer a ping is never asked to freeze: a freeze that fails
        # half-way leaves it unknown whether the guest is frozen.
        guest.ping()
        if guest.freeze_status() == "frozen":
            # Someone else's freeze (an administrator's, a group's hold of another agent):
            # not ours to thaw, so not ours to use either.
            raise Precondition(
                f"the filesystems of {request.domain} are already frozen by someone else; "
                "hostsnap leaves that freeze alone",
                reason="GUEST_ALREADY_FROZEN",
            )
        freeze = FreezeWindow(
            guest,
            svc.config.freeze_deadline,
            svc.monotonic,
            request.domain,
            on_watchdog=lambda: steps.write(svc.journal, job_id, Step.WATCHDOG_FIRED),
        )
        steps.write(svc.journal, job_id, Step.FREEZE, Freeze())
        freeze.start()
    except HostsnapError as e:
        if request.quiesce == Quiesce.REQUIRED or e.reason == STILL_FROZEN:
            raise
        log.warning("domain %s: freeze failed (%s); crash-consistent", request.domain, e)
        return None
    steps.write(svc.journal, job_id, Step.FROZEN, Frozen())
    return freeze


@contextlib.contextmanager
def _paused_if_several(svc: Services, job_id: str, domain: str, disks: int) -> Iterator[None]:
    if disks < 2 or svc.host.state(domain)[0] != DomainState.RUNNING:
        yield
        return
    with pause.paused(svc, job_id, domain, f"its {disks} disks are cut at one instant"):
        yield
