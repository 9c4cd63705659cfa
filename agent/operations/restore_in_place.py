"""Restore in place: a stopped volume given back the content of a backup's snapshot, from the
target alone. Like revert, only while nothing runs on the volume (its domain shut off, no
client watching the RBD image), and what it held before is kept:

- RBD: a snapshot of the image as it was is taken first and recorded as a hostsnap snapshot
  (revert to it to undo the restore); the image is then zeroed and written with the backup
  chain. Its name, id, snapshots and clones stay, so CloudStack and rbd-mirror see the same
  image. A restore that dies midway is rolled back to that snapshot.
- qcow2: a new standalone image is written beside the active one and the domain's disk is
  pointed at it, as a revert does; the old chain stays until purged. A restore that dies
  before the domain uses the new image removes it.

The domain is the backup's (`domain/disk`), found on this host; an RBD volume whose domain is
not defined here (CloudStack undefines stopped VMs) is restored into the backup's image."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from agent import faults, steps, validate
from agent.backups.catalog import Backup
from agent.errors import HostsnapError, InvalidArgument, NotFound, OperationFailed, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import Consistency, RbdSource, Volume, VolumeKind
from agent.operations import jobrun, revert, volumes
from agent.operations.backup import images, open_target
from agent.operations.image_snapshot import image_source, image_volume
from agent.operations.restore import RestoreRequest, RestoreResult, applied, chain_of
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX

log = logging.getLogger(__name__)

OPERATION = "restore-in-place"


class Step(steps.StepName):
    # file: the new image is about to be made; RBD: the image's snapshot is about to be taken
    PLAN = "plan"
    KEPT = "kept"  # RBD: the snapshot exists and is recorded; the image is about to be zeroed
    RESTORED = "restored"  # the volume's new content is whole (file: not yet the domain's)


@dataclass(frozen=True)
class Plan:
    kind: str  # "rbd" or "file"
    domain: str  # "" for an RBD image restored without its domain
    target: str  # the disk, or the image's "pool/image" without a domain
    image: str  # RBD: the image; file: the new image that becomes the active one
    previous: str  # file: the active image before; RBD: the id of the snapshot that keeps it
    chain: tuple[str, ...]
    client: str = ""  # RBD: the Ceph client that writes the image (its lock's owner)
    config_file: str = ""  # RBD: the image's cluster, as the domain's disk names it


@dataclass(frozen=True)
class Restored:
    size: int
    data_bytes: int


def restore_in_place(
    svc: Services, request: RestoreRequest, on_started: Callable[[str], None] | None = None
) -> RestoreResult:
    validate.backup_id(request.backup_id)
    if request.to:
        raise InvalidArgument(
            "restore in place goes onto the backup's own volume: name no destination",
            reason="INVALID_DESTINATION",
        )
    _, repository = open_target(svc, request.target)
    links = chain_of(repository, request.backup_id)
    wanted = links[-1]
    volume = _volume(svc, wanted)
    _ensure_unused(svc, volume)

    def body(job_id: str) -> RestoreResult:
        jobrun.checkpoint(svc, job_id, "the restore")
        _ensure_unused(svc, volume)  # again, under the job's locks
        ids = tuple(b.id for b in links)
        if volume.kind == VolumeKind.FILE:
            assert volume.path is not None
            new = volumes.overlay_path(volume.path, uuid.uuid4().hex)
            plan = Plan(VolumeKind.FILE, volume.domain, volume.target, new, volume.path, ids)
            steps.write(svc.journal, job_id, Step.PLAN, plan)
            # Never smaller than the disk is now: the guest keeps the disk size it has.
            size = max(wanted.size, qemu_img.chain(volume.path)[0].virtual_size)
            writing = images(svc).creating_file(new, size)
        else:
            source = volume.rbd
            assert source is not None
            sid = uuid.uuid4().hex
            plan = Plan(
                VolumeKind.RBD, volume.domain, volume.target, source.spec, sid, ids,
                svc.rbd.client(source), source.config_file or "",
            )  # fmt: skip
            steps.write(svc.journal, job_id, Step.PLAN, plan)
            _keep(svc, job_id, volume, source, sid, wanted)
            steps.write(svc.journal, job_id, Step.KEPT)
            writing = images(svc).overwriting_rbd(source, wanted.size)
        try:
            jobrun.checkpoint(svc, job_id, "applying the backups")
            with writing as writer, closing(applied(repository, links, writer)) as backups:
                for index, backup in enumerate(backups):
                    svc.journal.set_progress(job_id, (index + 1) / len(links))
                    faults.point(faults.Step.DURING_RESTORE)
                    jobrun.checkpoint(svc, job_id, f"applying the backups after {backup.id}")
        except BaseException as e:
            _undo_after(svc, plan, e)
            raise
        restored = Restored(wanted.size, sum(b.data_bytes for b in links))
        steps.write(svc.journal, job_id, Step.RESTORED, restored)
        faults.point(faults.Step.BEFORE_RESTORE_PUBLISH)
        if plan.kind == VolumeKind.FILE:
            _switch(svc, plan)
        log.info("job %s: backup %s restored in place on %s", job_id, wanted.id, volume.key)
        return _result(job_id, request.backup_id, plan, restored)

    spec = jobrun.JobSpec(
        OPERATION,
        volume.domain,
        [volume.key],
        {"backup_id": request.backup_id, "target": request.target, "in_place": True},
    )
    return jobrun.run(
        svc, spec, request.idempotency_key, body, lambda d: RestoreResult(**d), on_started
    )


def _volume(svc: Services, backup: Backup) -> Volume:
    """The backup's volume as this host has it now."""
    domain, _, target = backup.volume.partition("/")
    if domain and svc.host.exists(domain):
        volume = volumes.select(volumes.domain_volumes(svc, domain), (target,))[0]
        if not _same_volume(volume, backup):
            raise Precondition(
                f"disk {volume.key} is {volume.location} now, not the volume backup {backup.id}"
                f" is of ({backup.image}); restore it to a new image (--to)",
                reason="VOLUME_CHANGED",
            )
        return volume
    if backup.kind == VolumeKind.RBD:
        return image_volume(backup.image)
    raise NotFound(
        f"domain {domain or '?'} of backup {backup.id} is not defined on this host; restore the "
        "file volume to a new image (--to)",
        reason="DOMAIN_NOT_FOUND",
    )


def _same_volume(volume: Volume, backup: Backup) -> bool:
    """Whether the disk is still the volume backed up: the same RBD image, or a file of the
    same volume (its layers all carry the volume's original file name)."""
    if volume.kind != backup.kind:
        return False
    if volume.rbd is not None:
        return volume.rbd.spec == backup.image
    assert volume.path is not None
    return _original_name(volume.path) == _original_name(backup.image)


def _original_name(path: str) -> str:
    return volumes.OVERLAY_SUFFIX.sub("", path)


def _ensure_unused(svc: Services, volume: Volume) -> None:
    if volume.domain:
        revert.ensure_stopped(svc, volume.domain)
    if volume.rbd is not None:
        watchers = svc.rbd.watchers(volume.rbd)
        if watchers:
            raise Precondition(
                f"RBD image {volume.rbd.spec} is open by {', '.join(watchers)}; restore in place "
                "needs it unused (stop the VM that uses it)",
                reason="IMAGE_BUSY",
            )


def _keep(
    svc: Services, job_id: str, volume: Volume, source: RbdSource, sid: str, backup: Backup
) -> None:
    """A snapshot of the image as it is, recorded so that it is listed and can be reverted to."""
    name = f"{RBD_PREFIX}{sid}"
    svc.rbd.create_snapshot(source, name)
    svc.journal.add_snapshot(
        SnapshotRecord(
            id=sid,
            name=f"before-restore-{backup.id[:8]}",
            domain=volume.domain,
            target=volume.target,
            kind=VolumeKind.RBD,
            content=f"{source.spec}@{name}",
            overlay=None,
            consistency=Consistency.APPLICATION,  # nothing had the image open
            created=svc.wall_clock(),
            job_id=job_id,
            deleted=None,
        )
    )


def _switch(svc: Services, plan: Plan) -> None:
    """The domain's disk pointed at the restored image (a qcow2 file, whatever the disk's
    format was), and the layer map told."""
    if volumes.current_active(svc, plan.domain, plan.target) != plan.image:
        xml = svc.host.xml(plan.domain, inactive=True)
        svc.host.define(domain_xml.with_disk_source(xml, plan.target, plan.image, "qcow2"))
    svc.journal.set_active_layer(plan.domain, plan.target, plan.image, [plan.previous])
    svc.publish_layers()


def _undo_after(svc: Services, plan: Plan, error: BaseException) -> None:
    try:
        _undo(svc, plan, written=True)
    except HostsnapError as e:
        raise OperationFailed(
            f"the restore failed ({error}), and putting {plan.target} back failed too ({e}); "
            f"revert it to snapshot {plan.previous}"
        ) from e


def _rbd_source(plan: Plan) -> RbdSource:
    """The image as the plan recorded it (the domain may be gone or redefined since)."""
    return dataclasses.replace(image_source(plan.image), config_file=plan.config_file or None)


def _undo(svc: Services, plan: Plan, written: bool) -> None:
    """The volume as it was before the job: the new file removed, or the image rolled back
    to the snapshot that kept it (when it may have been written), that snapshot removed."""
    if plan.kind == VolumeKind.FILE:
        images(svc).remove_file(plan.image)  # never the domain's: it switches once whole
        return
    source = _rbd_source(plan)
    name = f"{RBD_PREFIX}{plan.previous}"
    if name not in {s.name for s in svc.rbd.snapshots(source)}:
        return  # it stopped before the snapshot: the image was never touched
    if written:
        svc.rbd.rollback(source, name)
    svc.rbd.remove_snapshot(source, name)
    svc.journal.mark_snapshot_deleted(plan.previous)


def _result(job_id: str, backup_id: str, plan: Plan, restored: Restored) -> RestoreResult:
    rbd = plan.kind == VolumeKind.RBD
    return RestoreResult(
        job_id=job_id,
        backup_id=backup_id,
        to=plan.image,
        size=restored.size,
        backups_applied=len(plan.chain),
        data_bytes=restored.data_bytes,
        kept_snapshot_id=plan.previous if rbd else "",
        replaced_image="" if rbd else plan.previous,
    )


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    plan = steps.read(job, Step.PLAN, Plan)
    if plan is None:
        return JobState.FAILED, "it stopped before changing anything"
    if plan.kind == VolumeKind.RBD:
        # The killed agent's lock on the image would stand until its watch times out.
        svc.rbd.break_lock_of(_rbd_source(plan), plan.client)
    restored = steps.read(job, Step.RESTORED, Restored)
    if restored is not None:
        if plan.kind == VolumeKind.FILE:
            if volumes.current_active(svc, plan.domain, plan.target) != plan.image:
                revert.ensure_stopped(svc, plan.domain)
            _switch(svc, plan)
        result = _result(job.id, job.request["backup_id"], plan, restored)
        svc.journal.succeed(job.id, jobrun.to_json(result))
        return JobState.SUCCEEDED, "the restored content was whole before the restart"
    if plan.kind == VolumeKind.RBD:
        # Never roll back under a guest: one started since runs on a half restored image.
        watchers = svc.rbd.watchers(_rbd_source(plan))
        if watchers:
            raise Precondition(
                f"RBD image {plan.image} is half restored and open by {', '.join(watchers)}; "
                f"stop what uses it and revert it to snapshot {plan.previous}"
            )
    _undo(svc, plan, written=steps.reached(job, Step.KEPT))
    return JobState.FAILED, "interrupted; the volume is as it was before the restore"
