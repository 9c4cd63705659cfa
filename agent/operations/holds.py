"""A guest held frozen for a consistency group until ThawGroup, the hold's own deadline (a
watchdog thaws it then) or an agent restart (recovery thaws its journalled job).

`released_by` is set before any thaw call is made, so a group member's snapshot that still
finds its hold unreleased once its disks have switched, and the guest agent reporting frozen,
knows the guest was frozen at the switch. Freeze and thaw calls take turns (one guest lock),
so a thaw never runs ahead of a freeze still in flight and leaves the guest frozen behind it.

The watchdog is armed right before the freeze call, and the hold's deadline is measured from
that same instant: the guest is never held past the deadline the caller is told.

The hold's lifecycle is a state machine (HoldState, TRANSITIONS): every change of state is
one `_apply` under the hold's state lock, logged with the domain, the group, the states and
why, and handed to `on_transition` (group.py journals it as a `hold-transition` step of the
hold's job once that job is in the journal); a transition not in the table raises
InvalidTransition. The guest lock only orders the
guest agent calls; the domain lock's lending (`use`, `done`) and the background thaw
(`start_retrying`) are kept beside the state, under the same state lock."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.hypervisor.ports import Guest
from agent.operations.quiesce import thaw_confirmed

log = logging.getLogger(__name__)

WATCHDOG = "watchdog"
# Seconds between the watchdog's thaws of a guest that stays frozen: 1, 2, 4, then every 5.
THAW_RETRY_DELAYS = (1.0, 2.0, 4.0, 5.0)


class HoldState(enum.StrEnum):
    READY = "ready"  # registered and holding the domain's lock; nothing asked of the guest
    FREEZING = "freezing"  # the freeze was asked for (the watchdog armed), not yet confirmed
    FROZEN = "frozen"  # the guest agent confirmed the freeze; the hold is in force
    RELEASED_FREEZING = "released-freezing"  # released while its freeze was unconfirmed
    RELEASED_FROZEN = "released-frozen"  # released, confirmed frozen: the thaw is to come
    THAWED = "thawed"  # released, and the guest is not frozen by it (thawed, or never frozen)
    ENDED = "ended"  # the hold job's final state is being written, by one caller


class HoldEvent(enum.StrEnum):
    FREEZE = "freeze"  # freeze(): the freeze is about to be asked for
    CONFIRM_FROZEN = "confirm-frozen"  # freeze(): the guest agent reports frozen
    RELEASE = "release"  # mark_released(): ThawGroup, the watchdog, a rescue, a failed freeze
    CONFIRM_THAWED = "confirm-thawed"  # thaw(): the guest reports thawed, or it is gone
    END = "end"  # claim_outcome(): the caller that writes the job's final state


TRANSITIONS: dict[tuple[HoldState, HoldEvent], HoldState] = {
    (HoldState.READY, HoldEvent.FREEZE): HoldState.FREEZING,
    (HoldState.FREEZING, HoldEvent.CONFIRM_FROZEN): HoldState.FROZEN,
    (HoldState.READY, HoldEvent.RELEASE): HoldState.THAWED,  # nothing was frozen
    (HoldState.FREEZING, HoldEvent.RELEASE): HoldState.RELEASED_FREEZING,
    (HoldState.FROZEN, HoldEvent.RELEASE): HoldState.RELEASED_FROZEN,
    # A freeze in flight when the hold was released still ends (the thaw waits for it).
    (HoldState.RELEASED_FREEZING, HoldEvent.CONFIRM_FROZEN): HoldState.RELEASED_FROZEN,
    (HoldState.RELEASED_FREEZING, HoldEvent.CONFIRM_THAWED): HoldState.THAWED,
    (HoldState.RELEASED_FROZEN, HoldEvent.CONFIRM_THAWED): HoldState.THAWED,
    (HoldState.THAWED, HoldEvent.END): HoldState.ENDED,
}

IN_FORCE = frozenset({HoldState.READY, HoldState.FREEZING, HoldState.FROZEN})
MAY_BE_FROZEN = frozenset(
    {
        HoldState.FREEZING,
        HoldState.FROZEN,
        HoldState.RELEASED_FREEZING,
        HoldState.RELEASED_FROZEN,
    }
)
CONFIRMED_FROZEN = frozenset({HoldState.FROZEN, HoldState.RELEASED_FROZEN})


@dataclass(frozen=True)
class Transition:
    """One change of a hold's state: the journal's `hold-transition` step."""

    before: str
    event: str
    after: str
    why: str


class InvalidTransition(RuntimeError):
    """An event the hold's state has no transition for: a bug, not a guest's doing."""


class GroupHold:
    def __init__(
        self,
        domain: str,
        group_id: str,
        job_id: str,
        seconds: float,
        guest: Guest,
        clock: Callable[[], float],
        on_deadline: Callable[[GroupHold], None],
        gone: Callable[[], bool] = lambda: False,
    ) -> None:
        """`gone`: whether the held domain no longer runs (stopped, or another domain of
        that name): then nothing of it is frozen."""
        self.domain = domain
        self.group_id = group_id
        self.job_id = job_id
        self.seconds = seconds
        self._guest = guest
        self._clock = clock
        self._gone = gone
        self.deadline = clock() + seconds  # from arm() on: when the watchdog fires
        self.frozen_at = 0.0
        self.filesystems = 0
        self.released_by: str | None = None  # set by the RELEASE transition
        self.user: str | None = None  # the snapshot job made under the hold (one, ever)
        self.unlock: Callable[[], None] = lambda: None  # gives the domain lock back
        # Told each transition (under the state lock); it must not raise: a thaw never
        # waits on the record of it.
        self.on_transition: Callable[[Transition], None] = lambda transition: None
        # Set once the first FreezeForGroup's freeze has succeeded or failed.
        self.settled = threading.Event()
        self._lock = threading.RLock()  # the state, and what is kept beside it
        self._current = HoldState.READY
        self._working = False  # the user job still runs
        self._unlocked = False  # the domain lock was given back
        self._retrying = False  # a background thaw thread was started
        self._guest_calls = threading.Lock()  # freeze and thaw calls take turns
        self._timer = threading.Timer(seconds, on_deadline, (self,))
        self._timer.daemon = True

    @property
    def state(self) -> HoldState:
        return self._current

    def _apply(self, event: HoldEvent, why: str) -> HoldState:
        """The one way the state changes: the table's next state, logged; InvalidTransition
        for an event the current state has no transition for."""
        with self._lock:
            before = self._current
            after = TRANSITIONS.get((before, event))
            if after is None:
                raise InvalidTransition(
                    f"group hold of {self.domain} (group {self.group_id}): no transition from "
                    f"{before} on {event} ({why})"
                )
            self._current = after
            log.info(
                "hold of domain %s (group %s): %s -> %s (%s: %s)",
                self.domain,
                self.group_id,
                before,
                after,
                event,
                why,
            )
            self.on_transition(Transition(before, event, after, why))
            return after

    @property
    def frozen(self) -> bool:
        """Confirmed frozen by this hold, and not yet confirmed thawed."""
        return self._current in CONFIRMED_FROZEN

    @property
    def guest(self) -> Guest:
        return self._guest

    @property
    def may_be_frozen(self) -> bool:
        """A freeze was (or is being) asked for and no thaw has been confirmed since."""
        return self._current in MAY_BE_FROZEN

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    def freeze(self) -> None:
        """Arms the watchdog (the deadline counts from here), freezes and confirms the
        freeze. A freeze that fails leaves the hold FREEZING (the guest may be frozen): its
        caller releases and thaws it."""
        with self._guest_calls:
            with self._lock:
                if self._current not in IN_FORCE:
                    raise Precondition(f"the hold of {self.domain} ended before its freeze")
                self._apply(HoldEvent.FREEZE, "FreezeForGroup")
                self.deadline = self._clock() + self.seconds
                self._timer.start()  # once: FREEZE leaves READY, which nothing re-enters
            self.frozen_at = self._clock()
            self.filesystems = self._guest.freeze()
            status = self._guest.freeze_status()
            if status != "frozen":
                raise OperationFailed(
                    f"domain {self.domain}: the guest agent reports {status!r} right after the "
                    "freeze"
                )
            self._apply(HoldEvent.CONFIRM_FROZEN, f"{self.filesystems} filesystems")
        log.info("domain %s: frozen for group %s", self.domain, self.group_id)

    def wait_for_freeze(self, timeout: float) -> bool:
        """Whether the first freeze of the hold has ended (succeeded or failed) within
        `timeout` seconds."""
        return self.settled.wait(timeout)

    def mark_released(self, by: str) -> bool:
        """True for the first release; the watchdog is stopped."""
        with self._lock:
            first = self._current in IN_FORCE
            if first:
                self._apply(HoldEvent.RELEASE, by)
                self.released_by = by
        self._timer.cancel()
        return first

    def thaw(self) -> float | None:
        """Thaws and confirms; the seconds the guest was held, or None when it was thawed
        already (or never frozen). OperationFailed (GUEST_STILL_FROZEN) when it stays frozen."""
        assert self.released_by is not None, "mark_released comes first"
        with self._guest_calls:
            if not self.may_be_frozen:
                return None
            try:
                thawed_at = thaw_confirmed(self._guest, self.domain, self._clock)
            except HostsnapError:
                if not self._gone():
                    raise
                log.warning("domain %s stopped while held: nothing is frozen", self.domain)
                thawed_at = self._clock()
            self._apply(HoldEvent.CONFIRM_THAWED, self.released_by)
        log.info("domain %s: thawed (group %s, %s)", self.domain, self.group_id, self.released_by)
        return thawed_at - self.frozen_at

    def start_retrying(self) -> bool:
        """True once: the caller starts the thread that thaws again (keep_thawing)."""
        with self._lock:
            first = not self._retrying
            self._retrying = True
            return first

    def claim_outcome(self) -> bool:
        """True once, for the first caller after the guest was confirmed thawed: it writes
        the hold job's final state."""
        with self._lock:
            if self._current != HoldState.THAWED:
                return False
            self._apply(HoldEvent.END, "the job's final state")
            return True

    def ensure_in_force(self) -> None:
        by = self.released_by
        if by is None:
            return
        if by == WATCHDOG:
            raise Precondition(
                f"the group hold of {self.domain} (group {self.group_id}) passed its "
                f"{self.seconds:.1f} s deadline and the watchdog thawed the guest",
                reason="FREEZE_DEADLINE_EXCEEDED",
            )
        raise Precondition(
            f"the group hold of {self.domain} (group {self.group_id}) was ended ({by})",
            reason="GROUP_HOLD_RELEASED",
        )

    def confirm_frozen(self) -> None:
        """After a member's disks switched: the hold is still in force and the guest agent
        reports frozen now, so the guest was frozen at the switch (our thaws wait for this
        call, and none began before it). Precondition otherwise: thawed behind the agent's
        back (`virsh domfsthaw`, a guest reboot, a Windows VSS auto-thaw) or not confirmable."""
        with self._guest_calls:
            self.ensure_in_force()
            try:
                status = self._guest.freeze_status()
            except HostsnapError as e:
                raise Precondition(
                    f"domain {self.domain}: whether the guest was still frozen for group "
                    f"{self.group_id} when its disks switched cannot be confirmed: {e}",
                    reason="GUEST_FREEZE_UNCONFIRMED",
                ) from e
        if status != "frozen":
            raise Precondition(
                f"domain {self.domain}: the guest agent reports {status!r} after the disks "
                f"switched: the guest was thawed during the hold of group {self.group_id} "
                "(not by hostsnap), so the snapshot is not application-consistent",
                reason="GUEST_THAWED_DURING_GROUP",
            )

    def use(self, job_id: str) -> None:
        """One snapshot job works under a hold, once: no other job after it, even when it
        failed."""
        with self._lock:
            self.ensure_in_force()
            if self.user is not None and self.user != job_id:
                raise used_by_other(self)
            self.user = job_id
            self._working = True

    def done(self) -> None:
        with self._lock:
            self._working = False
        self.unlock_if_unused()

    def unlock_if_unused(self) -> None:
        """The domain lock goes back once the hold is released and no job works under it."""
        with self._lock:
            if self._unlocked or self.released_by is None or self._working:
                return
            self._unlocked = True
        self.unlock()


def used_by_other(hold: GroupHold) -> Precondition:
    if hold._working:
        return Precondition(
            f"the group hold of {hold.domain} is used by snapshot job {hold.user}; one "
            "snapshot per hold",
            reason="GROUP_HOLD_IN_USE",
        )
    return Precondition(
        f"the group hold of {hold.domain} (group {hold.group_id}) was used by snapshot job "
        f"{hold.user}; one snapshot per hold: retry with that job's idempotency key, or "
        "freeze the group again under a new group id",
        reason="GROUP_HOLD_USED",
    )


def keep_thawing(
    hold: GroupHold,
    release: Callable[[], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """After a thaw that failed: waits (1, 2, 4, then every 5 s) and calls `release` (which
    raises while the guest may still be frozen) until it returns: the guest agent reports
    thawed, or the domain stopped or was replaced. Returns how many more attempts failed."""
    failures = 0
    while True:
        delay = THAW_RETRY_DELAYS[min(failures, len(THAW_RETRY_DELAYS) - 1)]
        log.critical(
            "domain %s MAY STILL BE FROZEN (group %s, job %s): thawing again in %.0f s "
            "(or thaw it now with `virsh domfsthaw %s`)",
            hold.domain,
            hold.group_id,
            hold.job_id,
            delay,
            hold.domain,
        )
        sleep(delay)
        try:
            release()
        except Exception as e:  # this thread must never die silently
            failures += 1
            log.critical("domain %s: thaw attempt failed: %s", hold.domain, e)
            continue
        log.warning(
            "domain %s: thawed at last (group %s, job %s)", hold.domain, hold.group_id, hold.job_id
        )
        return failures


class Holds:
    """The group holds of this agent process, the newest per domain (also once released)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_domain: dict[str, GroupHold] = {}

    def get(self, domain: str) -> GroupHold | None:
        with self.lock:
            return self.by_domain.get(domain)

    def forget(self, hold: GroupHold) -> None:
        with self.lock:
            if self.by_domain.get(hold.domain) is hold:
                del self.by_domain[hold.domain]

    def active(self) -> list[GroupHold]:
        with self.lock:
            return [h for h in self.by_domain.values() if h.released_by is None]

    def to_end(self) -> list[GroupHold]:
        """The holds in force, and the released ones whose guest may still be frozen."""
        with self.lock:
            return [h for h in self.by_domain.values() if h.released_by is None or h.may_be_frozen]
