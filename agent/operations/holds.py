"""A guest held frozen for a consistency group until ThawGroup, the hold's own deadline (a
watchdog thaws it then) or an agent restart (recovery thaws its journalled job).

`released_by` is set before any thaw call is made, so a group member's snapshot that still
finds its hold unreleased once its disks have switched knows the guest was frozen at the
switch. Freeze and thaw calls take turns (one guest lock), so a thaw never runs ahead of a
freeze still in flight and leaves the guest frozen behind it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.hypervisor.guest_agent import GuestAgent
from agent.operations.quiesce import thaw_confirmed

log = logging.getLogger(__name__)

WATCHDOG = "watchdog"


class GroupHold:
    def __init__(
        self,
        domain: str,
        group_id: str,
        job_id: str,
        seconds: float,
        guest: GuestAgent,
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
        self.deadline = clock() + seconds
        self.frozen_at = 0.0
        self.filesystems = 0
        self.released_by: str | None = None
        self.user: str | None = None  # the snapshot job working under the hold
        self.unlock: Callable[[], None] = lambda: None  # gives the domain lock back
        self._unlocked = False
        self._may_be_frozen = False
        self._frozen = False
        self._state = threading.Lock()
        self._guest_calls = threading.Lock()
        self._timer = threading.Timer(seconds, on_deadline, (self,))
        self._timer.daemon = True

    @property
    def frozen(self) -> bool:
        """Confirmed frozen by this hold, and not yet confirmed thawed."""
        return self._frozen

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    def freeze(self) -> None:
        """Arms the watchdog, freezes and confirms the freeze."""
        with self._guest_calls:
            if self.released_by is not None:
                raise Precondition(f"the hold of {self.domain} ended before its freeze")
            self._timer.start()
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

    def wait_for_freeze(self) -> None:
        """Returns once a freeze call in flight has ended."""
        with self._guest_calls:
            pass

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

    def use(self, job_id: str) -> None:
        """One snapshot job works under a hold, once."""
        with self._state:
            self.ensure_in_force()
            if self.user is not None and self.user != job_id:
                raise Precondition(
                    f"the group hold of {self.domain} is used by snapshot job {self.user}; one "
                    "snapshot per hold",
                    reason="GROUP_HOLD_IN_USE",
                )
            self.user = job_id

    def done(self) -> None:
        with self._state:
            self.user = None
        self.unlock_if_unused()

    def unlock_if_unused(self) -> None:
        """The domain lock goes back once the hold is released and no job works under it."""
        with self._state:
            if self._unlocked or self.released_by is None or self.user is not None:
                return
            self._unlocked = True
        self.unlock()


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
