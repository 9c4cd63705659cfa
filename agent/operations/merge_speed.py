"""How fast a live merge copies: lowered while the host runs hot or its pools busy (as
admission judges), back to the requested speed after."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent import steps
from agent.errors import HostsnapError
from agent.operations.services import Services

log = logging.getLogger(__name__)


class Step(steps.StepName):
    BANDWIDTH = "bandwidth"  # a live merge's speed was set (completion), in any merging job


@dataclass(frozen=True)
class Bandwidth:
    mib: int  # MiB/s; 0: unlimited
    reason: str


@dataclass(frozen=True)
class Control:
    """The job a merge belongs to, and how it may be steered: its speed, its progress, and
    whether a cancel of the job aborts it (only when an aborted merge harms nothing: the base
    holds no kept snapshot)."""

    job_id: str
    bandwidth_mib: int = 0
    progress: Callable[[float], None] = lambda fraction: None
    cancellable: bool = False
    pools: frozenset[str] = frozenset()  # where the merge reads and writes (for throttling)


class Speed:
    """Each change journalled. An active commit keeps its requested speed: to finish, it
    must copy faster than the guest writes, which a throttle could prevent for good."""

    CHECK_SECONDS = 2.0

    def __init__(
        self, svc: Services, domain: str, target: str, control: Control, is_active: bool
    ) -> None:
        self._svc, self._domain, self._target, self._control = svc, domain, target, control
        self._fixed = is_active or not control.pools
        self._current = control.bandwidth_mib
        self._next_check = svc.monotonic()

    def _wanted(self) -> tuple[int, str | None]:
        self._next_check = self._svc.monotonic() + self.CHECK_SECONDS
        if self._fixed:
            return self._control.bandwidth_mib, None
        return self._svc.admission.merge_bandwidth(
            set(self._control.pools),
            self._control.bandwidth_mib,
            throttled_now=self._current != self._control.bandwidth_mib,
        )

    def starting(self) -> int:
        """The speed to start the job at."""
        wanted, reason = self._wanted()
        if wanted != self._current:
            self._record(wanted, reason)
        return wanted

    def _record(self, wanted: int, reason: str | None) -> None:
        log.info(
            "job %s: %s/%s merge bandwidth %s MiB/s (%s)",
            self._control.job_id,
            self._domain,
            self._target,
            wanted or "unlimited",
            reason or "as requested",
        )
        detail = Bandwidth(wanted, reason or "as requested")
        steps.write(self._svc.journal, self._control.job_id, Step.BANDWIDTH, detail)
        self._current = wanted

    def adjust(self) -> None:
        """Changes the running job's speed when the host's state calls for another."""
        if self._svc.monotonic() < self._next_check:
            return
        wanted, reason = self._wanted()
        if wanted == self._current:
            return
        try:
            self._svc.host.block_job_set_speed(self._domain, self._target, wanted)
        except HostsnapError as e:  # the job ended meanwhile
            log.info("job %s: speed not changed: %s", self._control.job_id, e)
            return
        self._record(wanted, reason)
