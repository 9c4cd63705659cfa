"""Snapshots of RBD images without a domain: the volumes of a VM that is stopped, which
CloudStack keeps as no libvirt domain on any host, taken by any host with access to the pool.

Only an image nobody uses is snapshotted this way: one with RBD watchers (a QEMU has it
open) or that is a disk of a domain defined on this host is refused, since a snapshot taken
behind a guest's back is not what anyone asked for. The images are snapshotted one after
the other (no guest to freeze), all or nothing; the result is crash-consistent, the disks as
the VM's last shutdown left them."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from agent import faults, steps, validate
from agent.errors import HostsnapError, InvalidArgument, Precondition
from agent.hypervisor import domain_xml
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import (
    Consistency,
    DiskSnapshot,
    ImageSnapshotRequest,
    Quiesce,
    RbdSource,
    SnapshotResult,
    Volume,
    VolumeKind,
)
from agent.operations import jobrun
from agent.operations.services import Services
from agent.operations.snapshot import OPERATION, RBD_PREFIX

log = logging.getLogger(__name__)


class Step(steps.StepName):
    """An image snapshot's steps, journalled under snapshot.OPERATION (as a domain's)."""

    PLAN = "plan"  # the snapshot id of every image (a Plan), before any snapshot exists
    RBD_SNAPSHOT = "rbd-snapshot"  # an image's snapshot is about to be created
    UNDO = "undo"  # the job failed: the snapshots made are about to be removed


@dataclass(frozen=True)
class Plan:
    images: dict[str, str]  # "pool/image" -> snapshot id


@dataclass(frozen=True)
class RbdSnapshot:
    image: str  # "pool/image"
    name: str  # the RBD snapshot's name


METHOD = "rbd-stopped"
MAX_IMAGES = 32
NOTE = (
    "the VM is stopped: its disks are as its last shutdown left them, and the agent cannot "
    "tell whether that shutdown was clean"
)


def image_source(spec: str) -> RbdSource:
    """An RBD image named "pool/image", in the cluster of the agent's Ceph config."""
    pool, image = validate.rbd_image(spec)
    return RbdSource(pool, image)


def image_volume(spec: str) -> Volume:
    """An RBD image named "pool/image" as a volume without a domain (its target: the name)."""
    return Volume("", spec, VolumeKind.RBD, "raw", rbd=image_source(spec))


def image_volumes(images: tuple[str, ...]) -> list[Volume]:
    """The named images, each checked for its form; INVALID_ARGUMENT for none, too many or
    repeats."""
    if not images or len(images) > MAX_IMAGES:
        raise InvalidArgument(f"name 1 to {MAX_IMAGES} RBD images, got {len(images)}")
    if len(set(images)) != len(images):
        raise InvalidArgument(f"an RBD image is named more than once: {', '.join(images)}")
    return [image_volume(spec) for spec in images]


def create(
    svc: Services,
    request: ImageSnapshotRequest,
    on_started: Callable[[str], None] | None = None,
) -> SnapshotResult:
    validate.snapshot_name(request.name)
    # A known idempotency key answers with its job before any check (as snapshot.create).
    answer = jobrun.earlier(
        svc, OPERATION, "", request.idempotency_key, SnapshotResult.from_dict, on_started
    )
    if answer is not None:
        return answer()
    chosen = image_volumes(request.images)
    _check(svc, request, chosen)  # a refused request does not use up its idempotency key

    def body(job_id: str) -> SnapshotResult:
        pools = {f"rbd:{v.rbd.pool}" for v in chosen if v.rbd is not None}
        record = functools.partial(svc.journal.record, job_id)
        checkpoint = functools.partial(jobrun.checkpoint, svc, job_id, "admission")
        with svc.admission.admitted(job_id, pools, record, checkpoint):
            _check(svc, request, chosen)  # again, under the job's locks, as things are now
            return _snapshot(svc, job_id, request, chosen)

    spec = jobrun.JobSpec(OPERATION, "", [v.key for v in chosen], jobrun.to_json(request))
    return jobrun.run(
        svc, spec, request.idempotency_key, body, SnapshotResult.from_dict, on_started
    )


def _check(svc: Services, request: ImageSnapshotRequest, chosen: list[Volume]) -> None:
    if request.quiesce == Quiesce.REQUIRED:
        raise Precondition(
            "the images of a stopped VM can only be crash-consistent (whether its last "
            "shutdown was clean is not known here); quiesce 'required' cannot be met (use "
            "'preferred')",
            reason="QUIESCE_UNAVAILABLE",
        )
    for volume in chosen:
        _ensure_unwatched(svc, volume)  # NotFound first for an image that does not exist
    used = _domain_disks(svc)
    for volume in chosen:
        if volume.location in used:
            raise Precondition(
                f"RBD image {volume.location} is a disk of domain {used[volume.location]} on "
                "this host; snapshot it through its domain",
                reason="IMAGE_IN_USE",
            )


def _ensure_unwatched(svc: Services, volume: Volume) -> None:
    assert volume.rbd is not None
    watchers = svc.rbd.watchers(volume.rbd)
    if watchers:
        raise Precondition(
            f"RBD image {volume.location} is open (watched by {', '.join(watchers)}): a VM "
            "may be running on it; a snapshot behind its guest's back is not taken, snapshot "
            "it through its domain on the host it runs on",
            reason="IMAGE_IN_USE",
        )


def _domain_disks(svc: Services) -> dict[str, str]:
    """Every RBD image a domain defined on this host uses ("pool/image" -> domain), by its
    running and by its persistent definition."""
    found: dict[str, str] = {}
    for name, _, _ in svc.host.list_domains(True):
        for inactive in (False, True):
            try:
                xml = svc.host.xml(name, inactive=inactive)
            except HostsnapError:
                continue  # gone meanwhile, or transient
            for volume in domain_xml.volumes(name, xml):
                if volume.rbd is not None:
                    found.setdefault(volume.rbd.spec, name)
    return found


def _snapshot(
    svc: Services, job_id: str, request: ImageSnapshotRequest, chosen: list[Volume]
) -> SnapshotResult:
    jobrun.checkpoint(svc, job_id, "planning")
    plan = {v.location: uuid.uuid4().hex for v in chosen}  # "pool/image" -> snapshot id
    steps.write(svc.journal, job_id, Step.PLAN, Plan(plan))
    try:
        for volume in chosen:
            assert volume.rbd is not None
            name = f"{RBD_PREFIX}{plan[volume.location]}"
            _ensure_unwatched(svc, volume)  # a VM started since the check: nothing of it
            steps.write(svc.journal, job_id, Step.RBD_SNAPSHOT, RbdSnapshot(volume.location, name))
            svc.rbd.create_snapshot(volume.rbd, name)
            faults.point(faults.Step.DURING_RBD_SNAPSHOT)
    except BaseException:
        steps.write(svc.journal, job_id, Step.UNDO)
        undo(svc, plan)
        raise
    return commit_result(svc, job_id, request, plan)


def undo(svc: Services, plan: dict[str, str]) -> None:
    """Removes every snapshot of the plan Ceph has (a call that raised may have made it)."""
    for spec, sid in plan.items():
        try:
            svc.rbd.remove_snapshot(image_source(spec), f"{RBD_PREFIX}{sid}")
        except HostsnapError as e:
            log.error("undo: could not remove %s@%s%s: %s", spec, RBD_PREFIX, sid, e)


def commit_result(
    svc: Services, job_id: str, request: ImageSnapshotRequest, plan: dict[str, str]
) -> SnapshotResult:
    now = svc.wall_clock()
    disks = []
    for spec, sid in plan.items():
        content = f"{spec}@{RBD_PREFIX}{sid}"
        svc.journal.add_snapshot(
            SnapshotRecord(
                id=sid,
                name=request.name or sid[:8],
                domain="",
                target=spec,
                kind=VolumeKind.RBD,
                content=content,
                overlay=None,
                consistency=Consistency.CRASH,
                created=now,
                job_id=job_id,
                deleted=None,
            )
        )
        disks.append(DiskSnapshot(spec, VolumeKind.RBD, sid, content, spec, METHOD))
    return SnapshotResult(
        job_id=job_id,
        domain="",
        consistency=Consistency.CRASH,
        frozen_seconds=0.0,
        disks=tuple(disks),
        quiesce_note=NOTE,
    )


def is_image_job(job: Job) -> bool:
    return "images" in job.request


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    """An interrupted image snapshot: completed when Ceph has every snapshot of its plan,
    else every one made is removed."""
    planned = steps.read(job, Step.PLAN, Plan)
    if planned is None:
        return JobState.FAILED, "it stopped before changing anything"
    plan = planned.images
    made = all(
        f"{RBD_PREFIX}{sid}" in {s.name for s in svc.rbd.snapshots(image_source(spec))}
        for spec, sid in plan.items()
    )
    if made and not steps.reached(job, Step.UNDO):
        request = ImageSnapshotRequest(
            images=tuple(job.request["images"]),
            quiesce=Quiesce(job.request["quiesce"]),
            name=job.request["name"],
            idempotency_key=job.request["idempotency_key"],
        )
        result = commit_result(svc, job.id, request, plan)
        svc.journal.succeed(job.id, jobrun.to_json(result))
        return JobState.SUCCEEDED, "every image's snapshot had been taken; completed (crash)"
    undo(svc, plan)
    return JobState.FAILED, "the image snapshots had not all been taken; those made were removed"
