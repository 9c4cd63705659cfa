"""Short pauses of a running domain's vCPUs, journalled: an agent that dies inside one has the
domain resumed by start-up recovery instead of leaving the guest stopped. Only a domain found
running is paused, so a guest someone else paused (or libvirt, on an I/O error) is never
resumed by hostsnap."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from agent import faults, steps
from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.jobs import Job
from agent.model import DomainState
from agent.operations.services import Services

log = logging.getLogger(__name__)


class Step(steps.StepName):
    """A pause's steps, in every job that pauses a domain; a job whose last of them is
    `paused` may have left its domain paused (left_paused)."""

    PAUSED = "paused"  # the domain's vCPUs are about to be paused
    RESUMED = "resumed"  # they were resumed (or recovery found the domain not paused)


@dataclass(frozen=True)
class Paused:
    why: str  # what the pause is for


@dataclass(frozen=True)
class Resumed:
    paused_seconds: float  # written by the job that paused


@dataclass(frozen=True)
class ResumedBy:
    by: str  # written by another than the job that paused ("recovery"), which did not see it


@contextlib.contextmanager
def paused(svc: Services, job_id: str, domain: str, why: str) -> Iterator[None]:
    state = svc.host.state(domain)[0]
    if state != DomainState.RUNNING:
        raise Precondition(
            f"domain {domain} is {state}, not running; hostsnap would pause it to {why}: "
            "resume it or shut it off first",
            reason="DOMAIN_NOT_RUNNING",
        )
    log.info("job %s: pausing domain %s to %s", job_id, domain, why)
    steps.write(svc.journal, job_id, Step.PAUSED, Paused(why))
    start = svc.monotonic()
    try:
        svc.host.suspend(domain)
        faults.point(faults.Step.WHILE_PAUSED)
        yield
    finally:
        _resume(svc, domain)
        resumed = Resumed(paused_seconds=svc.monotonic() - start)
        steps.write(svc.journal, job_id, Step.RESUMED, resumed)


def _resume(svc: Services, domain: str) -> None:
    try:
        svc.host.resume(domain)
    except HostsnapError as e:
        if svc.host.state(domain)[0] == DomainState.PAUSED:
            raise OperationFailed(
                f"domain {domain} is still paused ({e}); resume it: virsh resume {domain}",
                reason="STILL_PAUSED",
            ) from e


def left_paused(job: Job) -> bool:
    pauses = [s.name for s in job.steps if s.name in (Step.PAUSED, Step.RESUMED)]
    return pauses[-1:] == [Step.PAUSED.value]


def resume_after_crash(svc: Services, job: Job) -> None:
    if svc.host.exists(job.domain) and svc.host.state(job.domain)[0] == DomainState.PAUSED:
        svc.host.resume(job.domain)
        log.warning("job %s: domain %s resumed by recovery", job.id, job.domain)
    steps.write(svc.journal, job.id, Step.RESUMED, ResumedBy("recovery"))
