"""Start-up recovery: every job the journal shows as running was interrupted by the agent's
death. Thaw what it froze, then finish or roll back each job from libvirt's and Ceph's facts,
and leave the job in a truthful final state."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from agent.errors import HostsnapError, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, JobState
from agent.model import (
    DeleteResult,
    DomainState,
    RbdSource,
    RevertResult,
    SnapshotRequest,
    Volume,
    VolumeKind,
)
from agent.operations import (
    chains,
    consistency,
    consolidate,
    group,
    image_snapshot,
    merge,
    pause,
    quiesce,
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
                "revert": _revert,
                "delete": _delete,
                "consolidate": _consolidate,
                "flatten": _flatten,
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


def _revert(svc: Services, job: Job) -> tuple[JobState, str]:
    rollback = job.step("rollback")
    if rollback is not None:
        # An interrupted RBD rollback leaves the image half rolled back: run it to the end,
        # but never under a running guest.
        if svc.host.state(job.domain)[0] != DomainState.SHUTOFF:
            raise Precondition(
                f"domain {job.domain} runs on a half rolled-back RBD image; stop it and revert "
                "again"
            )
        source = _rbd_source(svc, job.domain, rollback.detail["target"])
        svc.rbd.rollback(source, rollback.detail["name"])
        svc.journal.succeed(job.id, _revert_result(job, source.spec, rollback.detail["target"]))
        return JobState.SUCCEEDED, "the RBD rollback was run again to completion"
    plan = job.step("plan")
    if plan is None:
        return JobState.FAILED, "it stopped before changing anything"
    target, overlay = plan.detail["target"], plan.detail["overlay"]
    if volumes.current_active(svc, job.domain, target) == overlay:
        svc.journal.set_active_layer(job.domain, target, overlay, [plan.detail["previous"]])
        svc.journal.succeed(job.id, _revert_result(job, overlay, target))
        return JobState.SUCCEEDED, "the domain already used the new overlay; completed"
    merge.remove_unused_overlay(overlay)
    return JobState.FAILED, f"the domain still used its old image; {overlay} was removed"


def _revert_result(job: Job, active: str, target: str) -> dict[str, Any]:
    result: dict[str, Any] = to_json(
        RevertResult(job.id, job.request["snapshot_id"], job.domain, target, active)
    )
    return result


def _delete(svc: Services, job: Job) -> tuple[JobState, str]:
    sid = job.request["snapshot_id"]
    record = svc.journal.snapshot(sid, deleted=True)
    if record is None:
        return JobState.FAILED, "its snapshot record is gone"
    if record.kind == VolumeKind.RBD:
        source = (
            _rbd_source(svc, job.domain, record.target)
            if record.domain
            else image_snapshot.image_source(record.target)
        )
        svc.rbd.remove_snapshot(source, f"hostsnap-{sid}")
        svc.journal.mark_snapshot_deleted(sid)
        active = record.content.split("@")[0]
        result = DeleteResult(job.id, sid, job.domain, record.target, active)
        svc.journal.succeed(job.id, to_json(result))
        return JobState.SUCCEEDED, "the RBD snapshot removal was run again"
    if job.step("defer-merge") is not None:
        svc.journal.mark_snapshot_deleted(sid)
        active = volumes.current_active(svc, job.domain, record.target) or record.content
        result = DeleteResult(job.id, sid, job.domain, record.target, active)
        svc.journal.succeed(job.id, to_json(result))
        return JobState.SUCCEEDED, "the snapshot was forgotten; its layer waits for consolidation"
    step = job.step("merge")
    if step is None:
        return JobState.FAILED, "it stopped before changing anything"
    top, base = step.detail["top"], step.detail["base"]
    if job.step("merged") is None:
        merge.resume(svc, job.id, job.domain, record.target, top, base, step.detail["live"])
    active = volumes.current_active(svc, job.domain, record.target) or base
    merge.forget_merged(svc, job.domain, record.target, top, base, active)
    svc.journal.mark_snapshot_deleted(sid)
    result = DeleteResult(job.id, sid, job.domain, record.target, active, (top,))
    svc.journal.succeed(job.id, to_json(result))
    return JobState.SUCCEEDED, f"the merge of {top} was finished"


def _consolidate(svc: Services, job: Job) -> tuple[JobState, str]:
    """The merge under way is finished (re-attaching to a live commit QEMU still runs, and
    pivoting it when ready); the job then ends failed, the rest left for a new run."""
    step = job.step("merge")
    if step is None:
        return JobState.FAILED, "it stopped before merging anything"
    target, live = step.detail["target"], step.detail["live"]
    run = chains.MergeRun(step.detail["top"], step.detail["base"], tuple(step.detail["between"]))
    merged = job.step("merged")
    if merged is None or merged.at < step.at:
        bandwidth = job.request.get("bandwidth_mib", 0)
        merge.resume(svc, job.id, job.domain, target, run.top, run.base, live, bandwidth)
    active = volumes.current_active(svc, job.domain, target) or run.base
    merge.forget_merged(svc, job.domain, target, run.top, run.base, active, run.between)
    return JobState.FAILED, f"the merge of {run.top} was finished; consolidate again for the rest"


def _flatten(svc: Services, job: Job) -> tuple[JobState, str]:
    if job.step("rbd-flatten") is not None:
        return JobState.FAILED, "an RBD flatten was interrupted; the clone reads as before"
    step = job.step("flatten")
    if step is None:
        return JobState.FAILED, "it stopped before flattening anything"
    target = step.detail["target"]
    flattened = job.step("flattened")
    if flattened is None or flattened.at < step.at:
        if svc.host.exists(job.domain) and volumes.is_live(svc.host.state(job.domain)[0]):
            consolidate.wait_pull(svc, job.domain, target, lambda fraction: None)
        active = volumes.current_active(svc, job.domain, target)
        if active is None or len(qemu_img.chain(active)) > 1:
            return JobState.FAILED, f"the flatten of {target} did not finish; nothing was removed"
        if volumes.is_live(svc.host.state(job.domain)[0]):
            merge.make_durable(svc, job.id, job.domain, active)
        else:
            merge.redefine_offline(svc, job.domain, target, active)
    consolidate.finish_flatten(svc, step.detail["remove"], step.detail["lost"])
    return JobState.FAILED, f"the flatten of {target} was finished; other disks were not flattened"
