"""Start-up recovery: every job the journal shows as running was interrupted by the agent's
death. Thaw what it froze, then finish or roll back each job from libvirt's and Ceph's facts,
and leave the job in a truthful final state."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from agent.errors import HostsnapError
from agent.hypervisor import domain_xml
from agent.jobs import Job, JobState
from agent.model import (
    RbdSource,
    SnapshotRequest,
    Volume,
)
from agent.operations import (
    consistency,
    consolidate,
    delete,
    group,
    image_snapshot,
    pause,
    quiesce,
    revert,
    snapshot,
    volumes,
)
from agent.operations.jobrun import to_json
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
            svc.journal.record(job.id, "thawed", by="recovery")
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
                group.OPERATION: _group_freeze,
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


def _volume(svc: Services, domain: str, target: str) -> Volume:
    return volumes.select(domain_xml.volumes(domain, svc.host.xml(domain)), (target,))[0]


def _rbd_source(svc: Services, domain: str, target: str) -> RbdSource:
    source = _volume(svc, domain, target).rbd
    assert source is not None
    return source


def _snapshot(svc: Services, job: Job) -> tuple[JobState, str]:
    if image_snapshot.is_image_job(job):
        return image_snapshot.recover(svc, job)
    plan_step = job.step("plan")
    if plan_step is None:
        return JobState.FAILED, "it stopped before changing anything"
    known = {f.name for f in dataclasses.fields(snapshot.Plan)}
    plan = snapshot.Plan(**{k: v for k, v in plan_step.detail.items() if k in known})
    # First the RBD disks of a short freeze go back on their images (the guest's newest
    # data is in the overlays until then); then the disks are as the job found them.
    snapshot.merge_back(svc, job.id, job.domain, plan)
    by_target = {t: _volume(svc, job.domain, t) for t in plan.snapshot_ids}
    switched = all(
        volumes.current_active(svc, job.domain, t) == overlay
        for t, overlay in plan.overlays.items()
    )
    rbd_made = all(
        name in {s.name for s in svc.rbd.snapshots(_rbd_source(svc, job.domain, t))}
        for t, name in plan.rbd_snaps.items()
    )
    taken = rbd_made and (not plan.overlays or job.step("switch-active") is not None) and switched
    if job.request.get("group_id"):
        # A consistency group is all or nothing, and whether its hold was still in force at
        # the switch died with the agent: a member's parts are taken back.
        snapshot.undo(svc, job.id, job.domain, plan, by_target)
        return (
            JobState.FAILED,
            "a group member's snapshot was interrupted; its parts were taken back",
        )
    if taken and job.step("undo") is None:
        request = SnapshotRequest(**{**job.request, "disks": tuple(job.request["disks"])})
        window = consistency.Window.for_recovered(job, svc.wall_clock())
        result = snapshot.commit_result(svc, job.id, request, by_target, plan, window)
        svc.journal.succeed(job.id, to_json(result))
        return JobState.SUCCEEDED, f"the snapshot had been taken; completed ({window.consistency})"
    snapshot.undo(svc, job.id, job.domain, plan, by_target)
    return JobState.FAILED, "the snapshot had not been completed; its parts were taken back"


def _group_freeze(svc: Services, job: Job) -> tuple[JobState, str]:
    if job.step("freeze") is None:
        return JobState.FAILED, "it stopped before freezing the guest"
    return JobState.FAILED, "the group hold ended with the agent; the guest was thawed on start"
