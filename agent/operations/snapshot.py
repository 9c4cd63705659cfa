"""Create: one request snapshots all (or some) disks of a domain, running or stopped, qcow2
and RBD together, in one consistency window; any failure undoes every part already made."""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict

from agent import faults, steps, validate
from agent.errors import HostsnapError, InvalidArgument, Precondition
from agent.hypervisor import domain_xml
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import (
    DomainState,
    Quiesce,
    SnapshotRequest,
    SnapshotResult,
    Volume,
    VolumeKind,
)
from agent.operations import (
    consistency,
    disk_strategies,
    group,
    jobrun,
    quiesce,
    rbd_overlay,
    stats,
    volumes,
)
from agent.operations.holds import GroupHold
from agent.operations.services import Services

log = logging.getLogger(__name__)

OPERATION = "snapshot"
RBD_PREFIX = disk_strategies.RBD_PREFIX

# The snapshot's steps and their details live with the disks that write them.
Step = disk_strategies.Step
RbdDirect = disk_strategies.RbdDirect
RbdSnapshot = disk_strategies.RbdSnapshot
MergeBack = disk_strategies.MergeBack
Plan = disk_strategies.Plan
PlanRecord = disk_strategies.PlanRecord


def create(
    svc: Services, request: SnapshotRequest, on_started: Callable[[str], None] | None = None
) -> SnapshotResult:
    validate.snapshot_name(request.name)
    # A known idempotency key answers with its job before any check: a group member's retry
    # after its hold ended still learns what the first request did.
    answer = jobrun.earlier(
        svc,
        OPERATION,
        request.domain,
        request.idempotency_key,
        SnapshotResult.from_dict,
        on_started,
    )
    if answer is not None:
        return answer()
    domain = volumes.read_domain(svc, request.domain)
    chosen = volumes.select(domain.volumes(), request.disks)
    if not chosen:
        raise Precondition(f"domain {request.domain} has no disk hostsnap can snapshot")
    hold = _group_hold(svc, request)

    _check(svc, request, domain, chosen)  # a refused request does not use up its idempotency key

    def body(job_id: str) -> SnapshotResult:
        pools = {stats.pool_of(v) for v in chosen}
        record = functools.partial(svc.journal.record, job_id)
        checkpoint = functools.partial(jobrun.checkpoint, svc, job_id, "admission")
        # A group member's guest is frozen meanwhile: it does not wait for admission (the
        # group fails at once and thaws); a job refused admission leaves the hold unused.
        with (
            svc.admission.admitted(job_id, pools, record, checkpoint, wait=hold is None),
            group.working_under(hold, job_id) if hold else contextlib.nullcontext(),
        ):
            # Once admitted, under the job's locks: the disks and the domain as they are now.
            now = volumes.read_domain(svc, request.domain)
            current = volumes.select(now.volumes(), request.disks)
            _check(svc, request, now, current)
            return _snapshot(svc, job_id, request, now, current, hold)

    spec = jobrun.JobSpec(
        OPERATION,
        request.domain,
        [v.key for v in chosen],
        asdict(request),
        lent_by=hold.job_id if hold else None,
    )
    return jobrun.run(
        svc, spec, request.idempotency_key, body, SnapshotResult.from_dict, on_started
    )


def _group_hold(svc: Services, request: SnapshotRequest) -> GroupHold | None:
    """A group member's hold, which the snapshot works under instead of freezing."""
    if not request.group_id:
        return None
    if request.quiesce == Quiesce.NONE:
        raise InvalidArgument(
            "a group member's snapshot is taken frozen: quiesce none contradicts it"
        )
    return group.held(svc, request.domain, request.group_id)


def _check(
    svc: Services, request: SnapshotRequest, domain: volumes.DomainNow, chosen: list[Volume]
) -> None:
    """The checks before anything changes. Made twice: before the job exists (a refused
    request does not use up its idempotency key), and again once the job holds its locks
    and is admitted, on the disks and the domain as they are then."""
    state, live = domain.state, domain.live
    if request.group_id and not live:
        raise Precondition(f"domain {request.domain} is {state}; a group member must run")
    if not live and state != DomainState.SHUTOFF:
        raise Precondition(f"domain {request.domain} is {state}; snapshot it running or shut off")
    for volume in chosen:
        if live:
            volumes.ensure_no_block_job(svc, volume)
        if volume.rbd is not None:
            svc.rbd.snapshots(volume.rbd)  # the image exists, and Ceph is connected before a freeze
    volumes.check_file_pools(svc, chosen)
    if live and request.quiesce == Quiesce.REQUIRED and not request.group_id:
        svc.guest_agent(request.domain).ping()
    if (
        not live
        and request.quiesce == Quiesce.REQUIRED
        and not svc.host.shut_off_cleanly(request.domain)
    ):
        raise Precondition(
            f"domain {request.domain} was not shut down cleanly, so its disks are only "
            "crash-consistent; quiesce 'required' cannot be met (use 'preferred')",
            reason="QUIESCE_UNAVAILABLE",
        )


def _plan(
    svc: Services,
    job_id: str,
    domain: volumes.DomainNow,
    chosen: list[Volume],
    grouped: bool,
) -> Plan:
    live = domain.live
    has_rbd = any(v.kind == VolumeKind.RBD for v in chosen)
    # A group member's guest stays frozen for the whole group whatever its disks do: the
    # short freeze would only add an overlay and a merge back, so its RBD snapshots are
    # taken while frozen (rbd-frozen-across).
    unusable = (
        "a consistency group holds the guest frozen across the snapshot"
        if grouped and has_rbd
        else rbd_overlay.unusable_because(svc, chosen, live)
    )
    if unusable and has_rbd and live:
        level = logging.INFO if grouped else logging.WARNING
        log.log(
            level, "domain %s: RBD snapshot without the short freeze: %s", domain.name, unusable
        )
        steps.write(svc.journal, job_id, Step.RBD_DIRECT, RbdDirect(unusable))
    disks = tuple(
        disk_strategies.for_volume(svc, v, uuid.uuid4().hex, live, not unusable, domain.xml)
        for v in chosen
    )
    return Plan(live, disks)


def _snapshot(
    svc: Services,
    job_id: str,
    request: SnapshotRequest,
    domain: volumes.DomainNow,
    chosen: list[Volume],
    hold: GroupHold | None = None,
) -> SnapshotResult:
    by_target = {v.target: v for v in chosen}
    jobrun.checkpoint(svc, job_id, "planning")
    plan = _plan(svc, job_id, domain, chosen, hold is not None)
    steps.write(svc.journal, job_id, Step.PLAN, plan.record())
    try:
        for disk in plan.disks:
            disk.prepare(svc, by_target[disk.target])
        steps.write(svc.journal, job_id, Step.OVERLAYS_CREATED)
        faults.point(faults.Step.AFTER_OVERLAY_CREATED)
        svc.publish_layers(plan.pending_layers(request.domain))

        window_of = (
            consistency.held(svc, job_id, request.domain, hold)
            if hold
            else consistency.window(svc, job_id, request, plan.live, len(chosen))
        )
        with window_of as window:
            for disk in plan.disks:
                disk.in_window(svc, job_id, by_target[disk.target])
            if plan.switches():
                steps.write(svc.journal, job_id, Step.SWITCH_ACTIVE)
                _switch_to_overlays(svc, request.domain, plan)
                faults.point(faults.Step.AFTER_LIBVIRT_SNAPSHOT)
        thawed = quiesce.Thawed(window.frozen_seconds)
        steps.write(svc.journal, job_id, quiesce.Step.THAWED, thawed)
        for disk in plan.disks:
            disk.after_thaw(svc, job_id, by_target[disk.target])
        faults.point(faults.Step.BEFORE_MERGE_BACK)
        merge_back(svc, job_id, request.domain, plan)
    except BaseException:
        steps.write(svc.journal, job_id, Step.UNDO)
        undo(svc, job_id, request.domain, plan, by_target)
        raise
    return commit_result(svc, job_id, request, by_target, plan, window)


def merge_back(svc: Services, job_id: str, domain: str, plan: Plan) -> None:
    """Puts each RBD disk of the short freeze back on its image (again, after an agent that
    died while at it)."""
    for disk in plan.short_freezes():
        disk.back_on_image(svc, job_id, domain)
    if plan.short_freezes():
        steps.write(svc.journal, job_id, Step.MERGED_BACK)


def _switch_to_overlays(svc: Services, domain: str, plan: Plan) -> None:
    """One libvirt call: an external snapshot of the running domain, or a new definition."""
    if plan.live:
        svc.host.snapshot_external(
            domain, plan.switches(), domain_xml.all_targets(svc.host.xml(domain))
        )
        return
    xml = svc.host.xml(domain, inactive=True)
    for target, overlay in plan.switches().items():
        xml = domain_xml.with_disk_source(xml, target, overlay)
    svc.host.define(xml)


def undo(svc: Services, job_id: str, domain: str, plan: Plan, by_target: dict[str, Volume]) -> None:
    """Takes back every part a failed snapshot made, judging by what libvirt and Ceph show
    (a call that raised may still have done its work)."""
    for disk in plan.short_freezes():
        try:  # first: until then the guest's newest data is in the overlay alone
            disk.back_on_image(svc, job_id, domain)
        except HostsnapError as e:
            log.error(
                "undo: %s/%s is still on overlay %s: %s", domain, disk.target, disk.overlay, e
            )
    # The RBD snapshots, then the file overlays (whose merges take longest).
    for part in sorted(plan.disks, key=lambda d: d.kind != VolumeKind.RBD):
        part.undo(svc, job_id, domain, by_target[part.target])
    svc.publish_layers()


def commit_result(
    svc: Services,
    job_id: str,
    request: SnapshotRequest,
    by_target: dict[str, Volume],
    plan: Plan,
    window: consistency.Window,
) -> SnapshotResult:
    now = svc.wall_clock()
    disks = []
    for disk in plan.disks:
        volume = by_target[disk.target]
        made = disk.commit(svc, request.domain, volume)
        svc.journal.add_snapshot(
            SnapshotRecord(
                id=disk.snapshot_id,
                name=request.name or disk.snapshot_id[:8],
                domain=request.domain,
                target=disk.target,
                kind=volume.kind,
                content=made.content,
                overlay=disk.new_layer,
                consistency=window.consistency,
                created=now,
                job_id=job_id,
                deleted=None,
            )
        )
        disks.append(made)
    svc.publish_layers()
    return SnapshotResult(
        job_id=job_id,
        domain=request.domain,
        consistency=window.consistency,
        frozen_seconds=window.frozen_seconds,
        disks=tuple(disks),
        quiesce_note=window.note,
    )


def read_plan(job: Job) -> Plan | None:
    """The job's plan, from the journal's form of it (PlanRecord)."""
    record = steps.read(job, Step.PLAN, PlanRecord)
    return None if record is None else Plan.from_record(record)


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    """Ends a snapshot the agent's death interrupted: completed when all of it was made (and
    not a group member's), else taken back."""
    plan = read_plan(job)
    if plan is None:
        return JobState.FAILED, "it stopped before changing anything"
    # First the RBD disks of a short freeze go back on their images (the guest's newest
    # data is in the overlays until then); then the disks are as the job found them.
    merge_back(svc, job.id, job.domain, plan)
    domain = volumes.now(svc, job.domain)
    by_target = {d.target: domain.volume(d.target) for d in plan.disks}
    made = [d.made(svc, domain) for d in plan.disks]  # each asked: a disk off RBD raises
    switch_began = not plan.new_layers() or steps.reached(job, Step.SWITCH_ACTIVE)
    taken = all(made) and switch_began
    if job.request.get("group_id"):
        # A consistency group is all or nothing, and whether its hold was still in force at
        # the switch died with the agent: a member's parts are taken back.
        undo(svc, job.id, job.domain, plan, by_target)
        return (
            JobState.FAILED,
            "a group member's snapshot was interrupted; its parts were taken back",
        )
    if taken and not steps.reached(job, Step.UNDO):
        request = SnapshotRequest(**{**job.request, "disks": tuple(job.request["disks"])})
        window = consistency.Window.for_recovered(job, svc.wall_clock())
        result = commit_result(svc, job.id, request, by_target, plan, window)
        svc.journal.succeed(job.id, jobrun.to_json(result))
        return JobState.SUCCEEDED, f"the snapshot had been taken; completed ({window.consistency})"
    undo(svc, job.id, job.domain, plan, by_target)
    return JobState.FAILED, "the snapshot had not been completed; its parts were taken back"
