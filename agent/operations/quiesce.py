"""Freezing a guest for the few milliseconds a snapshot needs, and never longer.

The guest is thawed in `finally`, and by a watchdog at a hard deadline even if the snapshot
call hangs. After thaw the guest agent must report `thawed`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.errors import HostsnapError, OperationFailed
from agent.hypervisor.guest_agent import GuestAgent

log = logging.getLogger(__name__)

THAW_ATTEMPTS = 3


class FreezeWindow:
    """`start()` freezes the guest and arms the watchdog; `close()` thaws and confirms."""

    def __init__(
        self, guest: GuestAgent, deadline: float, clock: Callable[[], float], domain: str
    ) -> None:
        self._guest = guest
        self._deadline = deadline
        self._clock = clock
        self._domain = domain
        self._lock = threading.Lock()
        self._thawed = False
        self.watchdog_fired = False
        self.frozen_seconds = 0.0
        self._frozen_at = 0.0
        self._watchdog: threading.Timer | None = None

    def start(self) -> None:
        self._frozen_at = self._clock()
        try:
            count = self._guest.freeze()
        except HostsnapError:
            # A freeze that failed half-way may have frozen some filesystems.
            self._thaw_and_confirm()
            raise
        log.info("domain %s: %d filesystems frozen", self._domain, count)
        self._watchdog = threading.Timer(self._deadline, self._on_deadline)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_deadline(self) -> None:
        log.error(
            "domain %s: still frozen after the %.1f s deadline; thawing now",
            self._domain,
            self._deadline,
        )
        self.watchdog_fired = True
        try:
            self._thaw_and_confirm()
        except HostsnapError as e:
            log.error("domain %s: watchdog thaw failed: %s", self._domain, e)

    def _thaw_and_confirm(self) -> None:
        with self._lock:
            if self._thawed:
                return
            last_error: HostsnapError | None = None
            for _ in range(THAW_ATTEMPTS):
                try:
                    self._guest.thaw()
                    thawed_at = self._clock()
                    if self._guest.freeze_status() == "thawed":
                        self._thawed = True
                        self.frozen_seconds = thawed_at - self._frozen_at
                        return
                except HostsnapError as e:
                    last_error = e
            raise OperationFailed(
                f"domain {self._domain} may still be frozen after {THAW_ATTEMPTS} thaw attempts "
                f"({last_error}); run `hostsnap thaw {self._domain}`",
                reason="GUEST_STILL_FROZEN",
            )

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._thaw_and_confirm()
        log.info("domain %s: thawed after %.3f s", self._domain, self.frozen_seconds)
