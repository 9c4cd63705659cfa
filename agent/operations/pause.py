"""Short pauses of a running domain's vCPUs, journalled: an agent that dies inside one has the
domain resumed by start-up recovery instead of leaving the guest stopped. Only a domain found
running is paused, so a guest someone else paused (or libvirt, on an I/O error) is never
resumed by hostsnap."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from agent import faults
from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.jobs import Job
from agent.model import DomainState
from agent.operations.services import Services

log = logging.getLogger(__name__)


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
    svc.journal.record(job_id, "paused", why=why)
    start = svc.monotonic()
    try:
        svc.host.suspend(domain)
        faults.point("while-paused")
        yield
    finally:
        _resume(svc, domain)
        svc.journal.record(job_id, "resumed", paused_seconds=svc.monotonic() - start)


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
    pauses = [s.name for s in job.steps if s.name in ("paused", "resumed")]
    return pauses[-1:] == ["paused"]


def resume_after_crash(svc: Services, job: Job) -> None:
    if svc.host.exists(job.domain) and svc.host.state(job.domain)[0] == DomainState.PAUSED:
        svc.host.resume(job.domain)
        log.warning("job %s: domain %s resumed by recovery", job.id, job.domain)
    svc.journal.record(job.id, "resumed", by="recovery")
