"""A guest held frozen for a consistency group until ThawGroup, the hold's own deadline (a
watchdog thaws it then) or an agent restart (recovery thaws its journalled job).

`released_by` is set before any thaw call is made, so a group member's snapshot that still
finds its hold unreleased once its disks have switched, and the guest agent reporting frozen,
knows the guest was frozen at the switch. Freeze and thaw calls take turns (one guest lock),
so a thaw never runs ahead of a freeze still in flight and leaves the guest frozen behind it.

The watchdog is armed right before the freeze call, and the hold's deadline is measured from
that same instant: the guest is never held past the deadline the caller is told."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.hypervisor.ports import Guest
from agent.operations.quiesce import thaw_confirmed

log = logging.getLogger(__name__)

WATCHDOG = "watchdog"
# Seconds between the watchdog's thaws of a guest that stays frozen: 1, 2, 4, then every 5.
THAW_RETRY_DELAYS = (1.0, 2.0, 4.0, 5.0)


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
        self.released_by: str | None = None
        self.user: str | None = None  # the snapshot job made under the hold (one, ever)
        self.unlock: Callable[[], None] = lambda: None  # gives the domain lock back
        # Set once the first FreezeForGroup's freeze has succeeded or failed.
        self.settled = threading.Event()
        self._working = False  # the user job still runs
        self._unlocked = False
        self._may_be_frozen = False
        self._frozen = False
        self._outcome_written = False
        self._retrying = False
        self._state = threading.Lock()
        self._guest_calls = threading.Lock()
        self._timer = threading.Timer(seconds, on_deadline, (self,))
        self._timer.daemon = True
        self._armed = False

    @property
    def frozen(self) -> bool:
        """Confirmed frozen by this hold, and not yet confirmed thawed."""
        return self._frozen

    @property
    def guest(self) -> Guest:
        return self._guest

    @property
    def may_be_frozen(self) -> bool:
        """A freeze was (or is being) asked for and no thaw has been confirmed since."""
        return self._may_be_frozen

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    def arm(self) -> None:
        """Starts the watchdog (once); the hold's deadline counts from this instant."""
        with self._state:
            if self._armed:
                return
            self._armed = True
            self.deadline = self._clock() + self.seconds
            self._timer.start()

    def freeze(self) -> None:
        """Arms the watchdog (the deadline counts from here), freezes and confirms the
        freeze."""
        with self._guest_calls:
            if self.released_by is not None:
                raise Precondition(f"the hold of {self.domain} ended before its freeze")
            self.arm()
            self._may_be_frozen = True
            self.frozen_at = self._clock()
            self.filesystems = self._guest.freeze()
            status = self._guest.freeze_status()
            if status != "frozen":
                raise OperationFailed(
                    f"domain {self.domain}: the guest agent reports {status!r} right after the "
                    "freeze"
                )
            self._frozen = True
        log.info("domain %s: frozen for group %s", self.domain, self.group_id)

    def wait_for_freeze(self, timeout: float) -> bool:
        """Whether the first freeze of the hold has ended (succeeded or failed) within
        `timeout` seconds."""
        return self.settled.wait(timeout)

    def mark_released(self, by: str) -> bool:
        """True for the first release; the watchdog is stopped."""
        with self._state:
            first = self.released_by is None
            if first:
                self.released_by = by
        self._timer.cancel()
        return first

    def thaw(self) -> float | None:
        """Thaws and confirms; the seconds the guest was held, or None when it was thawed
        already (or never frozen). OperationFailed (GUEST_STILL_FROZEN) when it stays frozen."""
        assert self.released_by is not None, "mark_released comes first"
        with self._guest_calls:
            if not self._may_be_frozen:
                return None
            try:
                thawed_at = thaw_confirmed(self._guest, self.domain, self._clock)
            except HostsnapError:
                if not self._gone():
                    raise
                log.warning("domain %s stopped while held: nothing is frozen", self.domain)
                thawed_at = self._clock()
            self._may_be_frozen = self._frozen = False
        log.info("domain %s: thawed (group %s, %s)", self.domain, self.group_id, self.released_by)
        return thawed_at - self.frozen_at

    def start_retrying(self) -> bool:
        """True once: the caller starts the thread that thaws again (keep_thawing)."""
        with self._state:
            first = not self._retrying
            self._retrying = True
            return first

    def claim_outcome(self) -> bool:
        """True once, for the first caller after the guest was confirmed thawed: it writes
        the hold job's final state."""
        with self._state:
            if self._outcome_written or self._may_be_frozen:
                return False
            self._outcome_written = True
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
        with self._state:
            self.ensure_in_force()
            if self.user is not None and self.user != job_id:
                raise used_by_other(self)
            self.user = job_id
            self._working = True

    def done(self) -> None:
        with self._state:
            self._working = False
        self.unlock_if_unused()

    def unlock_if_unused(self) -> None:
        """The domain lock goes back once the hold is released and no job works under it."""
        with self._state:
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
