"""Admission: before a snapshot starts, the host and its pools must have room for it.

Limits: jobs at once per host and per pool, an IOPS ceiling per pool (configured capacity
against measured load) and a temperature ceiling. Over a limit the job waits, re-checking,
up to its deadline, then fails with RESOURCE_EXHAUSTED and a retry-after. Every decision and
its reason is written to the job's record. Past `throttle_at` of a ceiling, live merges that
are already running slow down to `throttled_bandwidth_mib`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from agent import steps
from agent.errors import NotAdmitted

log = logging.getLogger(__name__)


class Step(steps.StepName):
    """Admission's steps, in every job admitted by it (completions: each says what was
    decided)."""

    ADMISSION_WAIT = "admission-wait"  # the job waits for room (one per reason)
    ADMISSION_REFUSED = "admission-refused"  # it was not admitted: it fails with retry-after
    ADMITTED = "admitted"  # it holds its place on the host and its pools


@dataclass(frozen=True)
class AdmissionWait:
    reason: str


@dataclass(frozen=True)
class AdmissionRefused:
    reason: str
    retry_after: float


@dataclass(frozen=True)
class Admitted:
    pools: list[str]


def _write(record: Callable[..., None], step: Step, detail: steps.Detail) -> None:
    """`record` is the job's journal.record (its job id bound), or a test's."""
    record(step.value, **dataclasses.asdict(detail))


RELEASE = 0.9


@dataclass(frozen=True)
class AdmissionConfig:
    max_jobs: int = 4  # admitted jobs at once on the host
    max_jobs_per_pool: int = 2  # admitted jobs at once on one pool
    temperature_ceiling: float = 0.0  # °C; 0: no ceiling
    # Pool (file pool directory, or "rbd:<pool>") -> IOPS it can give; absent: no ceiling.
    iops_capacity: dict[str, float] = field(default_factory=dict)
    wait_timeout: float = 60.0  # seconds a job waits for room before it fails
    poll_interval: float = 1.0
    # At this fraction of the temperature ceiling or of a pool's IOPS capacity, the host is
    # hot or busy: live merges run at throttled_bandwidth_mib (MiB/s) until it is not.
    throttle_at: float = 0.9
    throttled_bandwidth_mib: int = 16


class Admission:
    def __init__(
        self,
        config: AdmissionConfig,
        hottest: Callable[[], float | None],
        pool_iops: Callable[[set[str]], dict[str, float]],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._hottest = hottest
        self._pool_iops = pool_iops
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._admitted: dict[str, set[str]] = {}  # job id -> pools

    def _take(self, job_id: str, pools: set[str]) -> str | None:
        """Takes a place for the job when the host and its pools have one (atomically);
        else says why not."""
        c = self._config
        with self._lock:
            if len(self._admitted) >= c.max_jobs:
                return f"{len(self._admitted)} jobs run on this host (limit {c.max_jobs})"
            for pool in sorted(pools):
                busy = sum(pool in held for held in self._admitted.values())
                if busy >= c.max_jobs_per_pool:
                    return f"{busy} jobs run on pool {pool} (limit {c.max_jobs_per_pool})"
            self._admitted[job_id] = pools
        return None

    def _load(self, pools: set[str], fraction: float = 1.0) -> str | None:
        """None when the host is below `fraction` of its temperature ceiling and its pools
        below that of their IOPS capacity, else why not."""
        c = self._config
        if c.temperature_ceiling:
            hottest = self._hottest()
            if hottest is not None and hottest >= fraction * c.temperature_ceiling:
                return f"the host is at {hottest:.1f} °C (ceiling {c.temperature_ceiling:.1f} °C)"
        capped = {p for p in pools if p in c.iops_capacity}
        if capped:
            for pool, load in sorted(self._pool_iops(capped).items()):
                if load >= fraction * c.iops_capacity[pool]:
                    return (
                        f"pool {pool} serves {load:.0f} IOPS (capacity {c.iops_capacity[pool]:.0f})"
                    )
        return None

    def merge_bandwidth(
        self, pools: set[str], requested_mib: int, throttled_now: bool = False
    ) -> tuple[int, str | None]:
        """The MiB/s a live merge on `pools` should run at now (0: unlimited), and why it is
        less than requested when it is. A merge slowed down already speeds up again only
        below RELEASE of the threshold, so a load near it does not flip the speed each time."""
        throttled = self._config.throttled_bandwidth_mib
        if requested_mib and requested_mib <= throttled:
            return requested_mib, None
        threshold = self._config.throttle_at * (RELEASE if throttled_now else 1.0)
        reason = self._load(pools, threshold)
        return (throttled, reason) if reason else (requested_mib, None)

    @contextlib.contextmanager
    def admitted(
        self,
        job_id: str,
        pools: set[str],
        record: Callable[..., None],
        checkpoint: Callable[[], None] = lambda: None,
        wait: bool = True,
    ) -> Iterator[None]:
        """Holds a place for the job while the block runs; waits for one first if need be
        (`checkpoint` raises when the job is cancelled meanwhile). Without `wait`, a job
        not admitted at once is refused at once (NotAdmitted, with its retry-after)."""
        deadline = self._clock() + self._config.wait_timeout
        reason = self._load(pools) or self._take(job_id, pools)
        if reason is not None and not wait:
            retry = self._config.poll_interval
            _write(record, Step.ADMISSION_REFUSED, AdmissionRefused(reason, retry))
            log.info("job %s not admitted (it does not wait): %s", job_id, reason)
            raise NotAdmitted(
                f"not admitted at once: {reason}; a group member's snapshot does not wait "
                f"while its guest is frozen; retry after {retry:.0f} s",
                retry,
            )
        recorded = None
        while reason is not None:
            if reason != recorded:
                _write(record, Step.ADMISSION_WAIT, AdmissionWait(reason))
                log.info("job %s waits for admission: %s", job_id, reason)
                recorded = reason
            checkpoint()
            if self._clock() >= deadline:
                retry = max(self._config.poll_interval, self._config.wait_timeout / 2)
                _write(record, Step.ADMISSION_REFUSED, AdmissionRefused(reason, retry))
                raise NotAdmitted(
                    f"not admitted within {self._config.wait_timeout:.0f} s: {reason}; "
                    f"retry after {retry:.0f} s",
                    retry,
                )
            self._sleep(self._config.poll_interval)
            reason = self._load(pools) or self._take(job_id, pools)
        try:
            _write(record, Step.ADMITTED, Admitted(sorted(pools)))
            yield
        finally:
            with self._lock:
                self._admitted.pop(job_id, None)
