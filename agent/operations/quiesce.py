"""Freezing a guest for the few milliseconds a snapshot needs, and never longer.

The watchdog is armed before the freeze call, so a hung freeze or a hung snapshot call is
thawed at the hard deadline; `close()` thaws in every other case. After thaw the guest agent
must report `thawed`, or the error says the guest may still be frozen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent import steps
from agent.errors import HostsnapError, OperationFailed
from agent.hypervisor.ports import Guest

log = logging.getLogger(__name__)

THAW_ATTEMPTS = 3
STILL_FROZEN = "GUEST_STILL_FROZEN"


class Step(steps.StepName):
    """The freeze's steps, in every job that freezes a guest; a job with a `freeze` and no
    `thawed` may have left its guest frozen (jobs.LEFT_FROZEN)."""

    FREEZE = "freeze"  # the guest is about to be frozen
    FROZEN = "frozen"  # it is
    WATCHDOG_FIRED = "watchdog-fired"  # its deadline passed: the watchdog thaws it
    THAWED = "thawed"  # it was thawed, and reports thawed
    HELD = "held"  # a group member's snapshot works under the group's hold
    FROZEN_CONFIRMED = "frozen-confirmed"  # the hold was still in force after its switch


@dataclass(frozen=True)
class Freeze:
    hold_seconds: float | None = None  # a group's hold


@dataclass(frozen=True)
class Frozen:
    filesystems: int | None = None


@dataclass(frozen=True)
class Thawed:
    frozen_seconds: float | None = None  # None: thawed by one that did not see the freeze
    by: str = ""  # who thawed, when not the job itself
    switch_seen: bool | None = None  # after the agent's exit: its disks had switched


@dataclass(frozen=True)
class Held:
    group_id: str
    hold_job_id: str


class FreezeWindow:
    """`start()` arms the watchdog and freezes the guest; `close()` thaws and confirms."""

    def __init__(
        self,
        guest: Guest,
        deadline: float,
        clock: Callable[[], float],
        domain: str,
        on_watchdog: Callable[[], None] = lambda: None,
    ) -> None:
        self._guest = guest
        self._deadline = deadline
        self._clock = clock
        self._domain = domain
        self._on_watchdog = on_watchdog
        self._lock = threading.Lock()
        self._thawed = False
        self.watchdog_fired = False
        self.frozen_seconds = 0.0
        self._frozen_at = 0.0
        self._watchdog: threading.Timer | None = None

    def start(self) -> None:
        self._frozen_at = self._clock()
        self._watchdog = threading.Timer(self._deadline, self._on_deadline)
        self._watchdog.daemon = True
        self._watchdog.start()
        try:
            count = self._guest.freeze()
        except HostsnapError:
            # A freeze that failed half-way may have frozen some filesystems.
            self.close()
            raise
        log.info("domain %s: %d filesystems frozen", self._domain, count)

    def _on_deadline(self) -> None:
        log.error(
            "domain %s: still frozen at the %.1f s deadline; thawing now",
            self._domain,
            self._deadline,
        )
        self.watchdog_fired = True
        try:
            self._on_watchdog()
            self._thaw_and_confirm()
        except Exception as e:  # the watchdog thread must never die silently
            log.error("domain %s: watchdog thaw failed: %s", self._domain, e)

    def _thaw_and_confirm(self) -> None:
        with self._lock:
            if self._thawed:
                return
            thawed_at = thaw_confirmed(self._guest, self._domain, self._clock)
            self._thawed = True
            self.frozen_seconds = thawed_at - self._frozen_at

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._thaw_and_confirm()
        log.info("domain %s: thawed after %.3f s", self._domain, self.frozen_seconds)


def thaw_confirmed(guest: Guest, domain: str, clock: Callable[[], float]) -> float:
    """Thaws until the guest agent reports `thawed`; returns when the thaw call returned."""
    last_error: HostsnapError | None = None
    for _ in range(THAW_ATTEMPTS):
        try:
            guest.thaw()
            thawed_at = clock()
            if guest.freeze_status() == "thawed":
                return thawed_at
        except HostsnapError as e:
            last_error = e
    raise OperationFailed(
        f"domain {domain} may still be frozen after {THAW_ATTEMPTS} thaw attempts "
        f"({last_error}); thaw it with `virsh domfsthaw {domain}`",
        reason=STILL_FROZEN,
    )
