"""Short pauses of a domain's vCPUs, journalled: an agent that dies inside one has the domain
resumed by start-up recovery instead of leaving the guest stopped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from agent.jobs import Job
from agent.model import DomainState
from agent.operations.services import Services

log = logging.getLogger(__name__)


@contextlib.contextmanager
def paused(svc: Services, job_id: str, domain: str, why: str) -> Iterator[None]:
    log.info("job %s: pausing domain %s: %s", job_id, domain, why)
    svc.journal.record(job_id, "paused", why=why)
    svc.host.suspend(domain)
    start = svc.monotonic()
    try:
        yield
    finally:
        svc.host.resume(domain)
        svc.journal.record(job_id, "resumed", paused_seconds=svc.monotonic() - start)


def left_paused(job: Job) -> bool:
    pauses = [s.name for s in job.steps if s.name in ("paused", "resumed")]
    return pauses[-1:] == ["paused"]


def resume_after_crash(svc: Services, job: Job) -> None:
    if svc.host.exists(job.domain) and svc.host.state(job.domain)[0] == DomainState.PAUSED:
        svc.host.resume(job.domain)
        log.warning("job %s: domain %s resumed by recovery", job.id, job.domain)
    svc.journal.record(job.id, "resumed", by="recovery")
