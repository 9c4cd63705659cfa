"""Waiting on libvirt block jobs: the one poll loop of the operations.

`wait` follows a running job (commit, pull) to its end, bounded by the configured
`block_job_timeout`: each round it reports progress, lets the caller steer the speed, and
aborts the job when the job it belongs to is cancelled or the deadline passes (the caller
says, in its own words, what then holds). `settle` waits the moment libvirt takes after a job
ended to show its outcome in the domain's XML (a chain without the merged layer, a disk back
on RBD)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.hypervisor.ports import Clock, Sleep
from agent.operations.services import Services

POLL_SECONDS = 0.05
SETTLE_SECONDS = 10.0

T = TypeVar("T")

# What libvirt reports of a running block job ({type, cur, end, bandwidth}); None: no job.
Info = dict[str, int] | None


def _nothing() -> None:
    pass


def _no_progress(fraction: float) -> None:
    pass


@dataclass(frozen=True)
class Watch:
    """How one wait is steered, and the errors it ends with once it aborted the job."""

    cancelled: Callable[[], Exception]  # raised after an abort for a cancel of `cancel_of`
    timed_out: Callable[[], Exception]  # raised after an abort at the deadline
    cancel_of: str | None = None  # the job whose cancel aborts the block job (None: no cancel)
    progress: Callable[[float], None] = _no_progress  # the fraction copied
    adjust_speed: Callable[[], None] = _nothing  # each round with progress (merge_speed.Speed)
    each_round: Callable[[], None] = _nothing  # each round not ended (e.g. a fault point)


def wait(
    svc: Services, domain: str, target: str, watch: Watch, done: Callable[[Info], bool]
) -> None:
    """Polls the disk's block job until `done(info)` (which may raise, or act: a pivot)."""
    deadline = svc.monotonic() + svc.config.block_job_timeout
    while True:
        info = svc.host.block_job(domain, target)
        if info and info["end"]:
            watch.progress(info["cur"] / info["end"])
            watch.adjust_speed()
        if done(info):
            return
        watch.each_round()
        if watch.cancel_of is not None and svc.cancellations.requested(watch.cancel_of):
            svc.host.block_job_abort(domain, target)
            raise watch.cancelled()
        if svc.monotonic() > deadline:
            svc.host.block_job_abort(domain, target)
            raise watch.timed_out()
        svc.sleep(POLL_SECONDS)


def ended(info: Info) -> bool:
    """`done` for a job that simply ends (a commit below the active image, a pull)."""
    return not info


def settle(
    svc: Services,
    look: Callable[[], T],
    settled: Callable[[T], bool],
    unsettled: Callable[[T], Exception],
    seconds: float = SETTLE_SECONDS,
) -> T:
    """What `look` shows once `settled` by it; `unsettled(last seen)` raised after `seconds`."""
    seen, ok = until(look, settled, seconds, svc.monotonic, svc.sleep)
    if not ok:
        raise unsettled(seen)
    return seen


def until(
    look: Callable[[], T],
    settled: Callable[[T], bool],
    seconds: float,
    clock: Clock,
    sleep: Sleep,
) -> tuple[T, bool]:
    """What `look` shows once `settled` by it (True), or the last seen after `seconds`."""
    deadline = clock() + seconds
    while True:
        seen = look()
        if settled(seen):
            return seen, True
        if clock() > deadline:
            return seen, False
        sleep(POLL_SECONDS)
