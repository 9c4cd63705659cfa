"""Revert a stopped domain's disk to a snapshot. qcow2: a fresh empty overlay on the
snapshot's layer becomes the active image (later layers stay until purged). RBD: rollback."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import faults, steps, validate
from agent.errors import InvalidArgument, NotFound, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import DomainState, RevertResult, Volume, VolumeKind
from agent.operations import jobrun, merge, volumes
from agent.operations.image_snapshot import image_volume
from agent.operations.jobrun import to_json
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX

log = logging.getLogger(__name__)

OPERATION = "revert"


class Step(steps.StepName):
    STOP_DOMAIN = "stop-domain"  # the domain is about to be shut down
    DOMAIN_STOPPED = "domain-stopped"  # it was
    PLAN = "plan"  # a new overlay is about to be made and defined as the active image
    ROLLBACK = "rollback"  # the RBD image is about to be rolled back


@dataclass(frozen=True)
class DomainStopped:
    clean: bool


@dataclass(frozen=True)
class Plan:
    target: str
    overlay: str
    previous: str  # the active image before


@dataclass(frozen=True)
class Rollback:
    target: str
    name: str


@dataclass(frozen=True)
class RevertRequest:
    snapshot_id: str
    domain: str = ""  # when given, the snapshot must belong to this domain
    idempotency_key: str | None = None
    stop_domain: bool = False  # shut a running domain down first


def find(svc: Services, snapshot_id: str, domain: str = "") -> tuple[SnapshotRecord, Volume]:
    """The snapshot's record and its volume as the domain has it now."""
    validate.snapshot_id(snapshot_id)
    if domain:
        validate.domain_name(domain)
    record = svc.journal.snapshot(snapshot_id)
    if record is None:
        raise NotFound(f"no snapshot {snapshot_id} on this host", reason="SNAPSHOT_NOT_FOUND")
    if not record.domain:  # taken by rbd_images: the image is its volume
        if domain:
            raise InvalidArgument(
                f"snapshot {snapshot_id} was taken of RBD image {record.target} without a "
                f"domain, not of {domain}; name no domain",
                reason="SNAPSHOT_OF_ANOTHER_VOLUME",
            )
        return record, image_volume(record.target)
    if domain and record.domain != domain:
        raise InvalidArgument(
            f"snapshot {snapshot_id} belongs to {record.domain}/{record.target}, not to {domain}",
            reason="SNAPSHOT_OF_ANOTHER_VOLUME",
        )
    volume = volumes.select(volumes.domain_volumes(svc, record.domain), (record.target,))[0]
    if volume.kind != record.kind:
        raise Precondition(f"disk {volume.key} is no longer a {record.kind} disk")
    return record, volume


def revert(
    svc: Services, request: RevertRequest, on_started: Callable[[str], None] | None = None
) -> RevertResult:
    record, volume = find(svc, request.snapshot_id, request.domain)
    if not record.domain:
        raise Precondition(
            f"snapshot {record.id} was taken of RBD image {record.target} without a domain; "
            "reverting it is not supported (roll the image back with `rbd snap rollback` "
            "while no VM uses it)",
            reason="IMAGE_SNAPSHOT",
        )
    if not request.stop_domain:
        ensure_stopped(svc, record.domain)

    def body(job_id: str) -> RevertResult:
        if request.stop_domain and svc.host.state(record.domain)[0] != DomainState.SHUTOFF:
            steps.write(svc.journal, job_id, Step.STOP_DOMAIN)
            clean = svc.host.stop(record.domain, svc.config.stop_timeout)
            steps.write(svc.journal, job_id, Step.DOMAIN_STOPPED, DomainStopped(clean))
        jobrun.checkpoint(svc, job_id, "the revert")
        ensure_stopped(svc, record.domain)  # again, under the job's locks
        if volume.kind == VolumeKind.FILE:
            if not os.path.exists(record.content):
                raise Precondition(f"the snapshot's layer {record.content} no longer exists")
        else:
            assert volume.rbd is not None
            if f"{RBD_PREFIX}{record.id}" not in {s.name for s in svc.rbd.snapshots(volume.rbd)}:
                raise Precondition(f"RBD snapshot {record.content} no longer exists in Ceph")
        if volume.kind == VolumeKind.FILE:
            active = _revert_file(svc, job_id, record, volume)
        else:
            active = _revert_rbd(svc, job_id, record, volume)
        return RevertResult(job_id, record.id, record.domain, record.target, active)

    spec = jobrun.JobSpec(OPERATION, record.domain, [volume.key], {"snapshot_id": record.id})
    return jobrun.run(
        svc, spec, request.idempotency_key, body, lambda d: RevertResult(**d), on_started
    )


def ensure_stopped(svc: Services, domain: str) -> None:
    state, _ = svc.host.state(domain)
    if state != DomainState.SHUTOFF:
        raise Precondition(
            f"domain {domain} is {state}; revert needs it shut off (stop it first)",
            reason="DOMAIN_NOT_STOPPED",
        )


def _revert_file(svc: Services, job_id: str, record: SnapshotRecord, volume: Volume) -> str:
    assert volume.path is not None
    overlay = volumes.overlay_path(volume.path, uuid.uuid4().hex)
    steps.write(svc.journal, job_id, Step.PLAN, Plan(volume.target, overlay, volume.path))
    try:
        qemu_img.create_overlay(overlay, record.content)
        faults.point(faults.Step.DURING_REVERT)
        xml = svc.host.xml(record.domain, inactive=True)
        svc.host.define(domain_xml.with_disk_source(xml, volume.target, overlay))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(overlay)  # made, or half made, and never used
        raise
    svc.journal.set_active_layer(record.domain, volume.target, overlay, [volume.path])
    svc.publish_layers()
    log.info("job %s: %s now runs on %s over %s", job_id, volume.key, overlay, record.content)
    return overlay


def _revert_rbd(svc: Services, job_id: str, record: SnapshotRecord, volume: Volume) -> str:
    assert volume.rbd is not None
    name = f"{RBD_PREFIX}{record.id}"
    steps.write(svc.journal, job_id, Step.ROLLBACK, Rollback(volume.target, name))
    faults.point(faults.Step.DURING_REVERT)
    svc.rbd.rollback(
        volume.rbd, name, lambda done: log.info("job %s: rollback %.0f%%", job_id, done * 100)
    )
    return volume.location


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    rollback = steps.read(job, Step.ROLLBACK, Rollback)
    if rollback is not None:
        # An interrupted RBD rollback leaves the image half rolled back: run it to the end,
        # but never under a running guest.
        if svc.host.state(job.domain)[0] != DomainState.SHUTOFF:
            raise Precondition(
                f"domain {job.domain} runs on a half rolled-back RBD image; stop it and revert "
                "again"
            )
        source = volumes.rbd_source(svc, job.domain, rollback.target)
        svc.rbd.rollback(source, rollback.name)
        svc.journal.succeed(job.id, _result(job, source.spec, rollback.target))
        return JobState.SUCCEEDED, "the RBD rollback was run again to completion"
    plan = steps.read(job, Step.PLAN, Plan)
    if plan is None:
        return JobState.FAILED, "it stopped before changing anything"
    if volumes.current_active(svc, job.domain, plan.target) == plan.overlay:
        svc.journal.set_active_layer(job.domain, plan.target, plan.overlay, [plan.previous])
        svc.journal.succeed(job.id, _result(job, plan.overlay, plan.target))
        return JobState.SUCCEEDED, "the domain already used the new overlay; completed"
    merge.remove_unused_overlay(plan.overlay)
    return JobState.FAILED, f"the domain still used its old image; {plan.overlay} was removed"


def _result(job: Job, active: str, target: str) -> dict[str, Any]:
    result: dict[str, Any] = to_json(
        RevertResult(job.id, job.request["snapshot_id"], job.domain, target, active)
    )
    return result
