"""Start-up recovery: every job the journal shows as running was interrupted by the agent's
death. Thaw what it froze, then finish or roll back each job from libvirt's and Ceph's facts,
and leave the job in a truthful final state."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent import steps
from agent.errors import HostsnapError
from agent.jobs import Job, JobState
from agent.operations import (
    backup,
    backup_delete,
    consolidate,
    delete,
    group,
    image_snapshot,
    pause,
    quiesce,
    restore,
    restore_in_place,
    revert,
    snapshot,
    volumes,
)
from agent.operations.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    job_id: str
    operation: str
    state: JobState
    detail: str


def recover(svc: Services) -> list[Recovered]:
    for job in svc.journal.jobs_left_frozen():
        try:
            _thaw(svc, job.domain)
            steps.write(svc.journal, job.id, quiesce.Step.THAWED, quiesce.Thawed(by="recovery"))
        except HostsnapError as e:
            log.error("domain %s may still be frozen (job %s): %s", job.domain, job.id, e)
    outcomes = []
    for job in svc.journal.jobs(JobState.RUNNING):
        log.warning(
            "job %s: %s of %s was interrupted; recovering", job.id, job.operation, job.domain
        )
        try:
            if pause.left_paused(job):
                pause.resume_after_crash(svc, job)
            handler = {
                "snapshot": _snapshot,
                revert.OPERATION: revert.recover,
                delete.OPERATION: delete.recover,
                consolidate.CONSOLIDATE: consolidate.recover_consolidate,
                consolidate.FLATTEN: consolidate.recover_flatten,
                group.OPERATION: group.recover,
                backup.OPERATION: backup.recover,
                restore.OPERATION: restore.recover,
                restore_in_place.OPERATION: restore_in_place.recover,
                restore.VERIFY: restore.recover_verify,
                backup_delete.OPERATION: backup_delete.recover,
            }[job.operation]
            state, detail = handler(svc, job)
        except HostsnapError as e:
            state, detail = JobState.FAILED, f"recovery could not finish the job: {e}"
        if state == JobState.FAILED:
            svc.journal.fail(job.id, f"interrupted by an agent restart; {detail}", "INTERRUPTED")
        outcomes.append(Recovered(job.id, job.operation, state, detail))
        log.warning("job %s: %s (%s)", job.id, state, detail)
    svc.publish_layers()
    return outcomes


def _thaw(svc: Services, domain: str) -> None:
    if not svc.host.exists(domain) or not volumes.is_live(svc.host.state(domain)[0]):
        return
    quiesce.thaw_confirmed(svc.guest_agent(domain), domain, svc.monotonic)
    log.warning("domain %s: thawed by recovery", domain)


def _snapshot(svc: Services, job: Job) -> tuple[JobState, str]:
    if image_snapshot.is_image_job(job):
        return image_snapshot.recover(svc, job)
    return snapshot.recover(svc, job)
