"""Delete a snapshot. qcow2: the layer above the snapshot's content is merged into it (live
block commit or qemu-img), so every other snapshot still reads what it did. RBD: the
snapshot is removed (unprotected first when no clone depends on it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent import faults, steps
from agent.errors import Precondition
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import DeleteResult, Volume, VolumeKind
from agent.operations import image_snapshot, jobrun, merge, volumes
from agent.operations.jobrun import to_json
from agent.operations.revert import find
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX

OPERATION = "delete"


class Step(steps.StepName):
    DEFER_MERGE = "defer-merge"  # the snapshot is about to be forgotten, its layer kept
    KEEP_SHARED_LAYER = "keep-shared-layer"  # the same, for a layer two images are backed by
    REMOVE_RBD_SNAPSHOT = "remove-rbd-snapshot"  # the RBD snapshot is about to be removed
    MERGE = "merge"  # the layer above is about to be merged into the snapshot's layer
    MERGED = "merged"  # it was: the disk no longer uses the layer above


@dataclass(frozen=True)
class DeferMerge:
    layer: str


@dataclass(frozen=True)
class KeepSharedLayer:
    children: list[str]


@dataclass(frozen=True)
class RemoveRbdSnapshot:
    name: str


@dataclass(frozen=True)
class Merge:
    top: str
    base: str
    live: bool  # top is in the running chain: a live commit


@dataclass(frozen=True)
class Merged:
    active: str


@dataclass(frozen=True)
class DeleteRequest:
    snapshot_id: str
    domain: str = ""  # when given, the snapshot must belong to this domain
    idempotency_key: str | None = None
    # File disks: only forget the snapshot; its layer is merged by the next consolidation
    # (many deletes, one merge).
    defer_merge: bool = False


def delete(
    svc: Services, request: DeleteRequest, on_started: Callable[[str], None] | None = None
) -> DeleteResult:
    if request.domain:
        # A known key answers with its job before any check: a resend after the delete was
        # done (the controller's, when its leader died) finds the snapshot gone, and must
        # learn that it was deleted, not that it is not found.
        answer = jobrun.earlier(
            svc, OPERATION, request.domain, request.idempotency_key, _result, on_started
        )
        if answer is not None:
            return answer()
    record, volume = find(svc, request.snapshot_id, request.domain)
    _check(svc, volume)  # a refused request does not use up its idempotency key

    def body(job_id: str) -> DeleteResult:
        live = _check(svc, volume)  # again, under the job's locks
        if volume.kind == VolumeKind.FILE and request.defer_merge:
            steps.write(svc.journal, job_id, Step.DEFER_MERGE, DeferMerge(record.content))
            svc.journal.mark_snapshot_deleted(record.id)
            note = f"its layer {record.content} stays until the next consolidation"
            return DeleteResult(
                job_id, record.id, record.domain, record.target, volume.location, (), note
            )
        if volume.kind == VolumeKind.FILE:
            return _delete_file(svc, job_id, record, volume, live)
        assert volume.rbd is not None
        name = f"{RBD_PREFIX}{record.id}"
        steps.write(svc.journal, job_id, Step.REMOVE_RBD_SNAPSHOT, RemoveRbdSnapshot(name))
        svc.rbd.remove_snapshot(volume.rbd, name)
        svc.journal.mark_snapshot_deleted(record.id)
        return DeleteResult(job_id, record.id, record.domain, record.target, volume.location)

    spec = jobrun.JobSpec(OPERATION, record.domain, [volume.key], {"snapshot_id": record.id})
    return jobrun.run(svc, spec, request.idempotency_key, body, _result, on_started)


def _check(svc: Services, volume: Volume) -> bool:
    """True when the domain runs; a block job someone else runs on the disk is a conflict.
    An image snapshotted without a domain: removing its snapshot never touches its data."""
    if not volume.domain:
        return False
    live = volumes.is_live(svc.host.state(volume.domain)[0])
    if live:
        volumes.ensure_no_block_job(svc, volume)
    return live


def _result(data: dict[str, object]) -> DeleteResult:
    return DeleteResult(**{**data, "removed": tuple(data["removed"])})  # type: ignore[arg-type]


def layer_above(
    svc: Services, record: SnapshotRecord, volume: Volume, live: bool, above: list[str]
) -> tuple[str, bool]:
    """The one image whose backing file is the snapshot's layer, and whether it is in the
    running chain."""
    chain = [layer.path for layer in volumes.file_chain(svc, volume, live)]
    if record.content in chain[1:]:
        return chain[chain.index(record.content) - 1], live
    if len(above) != 1:
        raise Precondition(
            f"the snapshot's layer {record.content} is the backing file of no image",
            reason="LAYER_ORPHANED",
        )
    return above[0], False


def _delete_file(
    svc: Services, job_id: str, record: SnapshotRecord, volume: Volume, live: bool
) -> DeleteResult:
    above = merge.children(record.content)
    if len(above) > 1:
        # After a revert the layer backs the new active image and the branch the revert left.
        # Merging either into it would change what the other reads: the snapshot goes, its
        # layer stays as a plain backing layer (consolidation merges it away later).
        steps.write(svc.journal, job_id, Step.KEEP_SHARED_LAYER, KeepSharedLayer(above))
        svc.journal.mark_snapshot_deleted(record.id)
        note = f"its layer {record.content} stays: it is the backing file of {', '.join(above)}"
        active = volumes.current_active(svc, record.domain, record.target) or volume.location
        return DeleteResult(job_id, record.id, record.domain, record.target, active, (), note)
    top, in_running_chain = layer_above(svc, record, volume, live, above)
    jobrun.checkpoint(svc, job_id, "the merge")
    steps.write(svc.journal, job_id, Step.MERGE, Merge(top, record.content, in_running_chain))
    active = merge.merge_into_backing(
        svc,
        record.domain,
        record.target,
        top,
        record.content,
        in_running_chain,
        merge.Control(job_id),
    )
    faults.point(faults.Step.AFTER_MERGE)
    steps.write(svc.journal, job_id, Step.MERGED, Merged(active))
    merge.forget_merged(svc, record.domain, record.target, top, record.content, active)
    svc.journal.mark_snapshot_deleted(record.id)
    return DeleteResult(job_id, record.id, record.domain, record.target, active, (top,))


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    """A delete the agent's death interrupted is run to its end: nothing it did can be taken
    back (a merged layer's data is in its base)."""
    sid = job.request["snapshot_id"]
    record = svc.journal.snapshot(sid, deleted=True)
    if record is None:
        return JobState.FAILED, "its snapshot record is gone"
    if record.kind == VolumeKind.RBD:
        source = (
            volumes.rbd_source(svc, job.domain, record.target)
            if record.domain
            else image_snapshot.image_source(record.target)
        )
        svc.rbd.remove_snapshot(source, f"{RBD_PREFIX}{sid}")
        svc.journal.mark_snapshot_deleted(sid)
        active = record.content.split("@")[0]
        result = DeleteResult(job.id, sid, job.domain, record.target, active)
        svc.journal.succeed(job.id, to_json(result))
        return JobState.SUCCEEDED, "the RBD snapshot removal was run again"
    if steps.reached(job, Step.DEFER_MERGE):
        svc.journal.mark_snapshot_deleted(sid)
        active = volumes.current_active(svc, job.domain, record.target) or record.content
        result = DeleteResult(job.id, sid, job.domain, record.target, active)
        svc.journal.succeed(job.id, to_json(result))
        return JobState.SUCCEEDED, "the snapshot was forgotten; its layer waits for consolidation"
    step = steps.read(job, Step.MERGE, Merge)
    if step is None:
        return JobState.FAILED, "it stopped before changing anything"
    if not steps.reached(job, Step.MERGED):
        merge.resume(svc, job.id, job.domain, record.target, step.top, step.base, step.live)
    active = volumes.current_active(svc, job.domain, record.target) or step.base
    merge.forget_merged(svc, job.domain, record.target, step.top, step.base, active)
    svc.journal.mark_snapshot_deleted(sid)
    result = DeleteResult(job.id, sid, job.domain, record.target, active, (step.top,))
    svc.journal.succeed(job.id, to_json(result))
    return JobState.SUCCEEDED, f"the merge of {step.top} was finished"
