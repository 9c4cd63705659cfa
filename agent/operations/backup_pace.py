"""How fast a backup reads its snapshot: at admission's throttled bandwidth while the host
runs hot or the volume's pool is busy (as admission judges, the rules of live merges), at
full speed again once it is not. Reading slower also slows compression and encryption, which
heat the host. Each change is a step of the job."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent import steps
from agent.operations.services import Services

log = logging.getLogger(__name__)


class Step(steps.StepName):
    READ_SPEED = "read-speed"  # the backup's read speed was changed (completion)


@dataclass(frozen=True)
class ReadSpeed:
    mib: int  # MiB/s; 0: unlimited
    reason: str


class ReadPace:
    CHECK_SECONDS = 2.0

    def __init__(self, svc: Services, job_id: str, pools: set[str]) -> None:
        self._svc, self._job_id, self._pools = svc, job_id, pools
        self._mib = 0
        self._next_check = svc.monotonic()
        self._since, self._read = svc.monotonic(), 0  # this speed's window

    def read(self, length: int) -> None:
        """Called after each read of `length` bytes; sleeps as long as the speed asks."""
        self._adjust()
        if not self._mib:
            return
        rate = self._mib << 20
        now = self._svc.monotonic()
        # No credit banked beyond a second: a stall (restic busy) is not made up by a burst.
        self._since = max(self._since, now - self._read / rate - 1.0)
        self._read += length
        early = self._since + self._read / rate - now
        if early > 0:
            self._svc.sleep(early)

    def _adjust(self) -> None:
        now = self._svc.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.CHECK_SECONDS
        mib, reason = self._svc.admission.merge_bandwidth(
            self._pools, 0, throttled_now=self._mib != 0
        )
        if mib == self._mib:
            return
        reason = reason or "the host and its pools have room again"
        log.info("job %s: backup reads at %s MiB/s (%s)", self._job_id, mib or "full", reason)
        steps.write(self._svc.journal, self._job_id, Step.READ_SPEED, ReadSpeed(mib, reason))
        self._mib, self._since, self._read = mib, now, 0
