"""Create: one request snapshots all (or some) disks of a domain, running or stopped, qcow2
and RBD together, in one consistency window; any failure undoes every part already made."""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from agent import faults, steps, validate
from agent.errors import HostsnapError, InvalidArgument, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import (
    DiskSnapshot,
    DomainState,
    Quiesce,
    SnapshotRequest,
    SnapshotResult,
    Volume,
    VolumeKind,
)
from agent.operations import (
    consistency,
    group,
    jobrun,
    merge,
    quiesce,
    rbd_overlay,
    stats,
    volumes,
)
from agent.operations.holds import GroupHold
from agent.operations.services import Services

log = logging.getLogger(__name__)

OPERATION = "snapshot"
RBD_PREFIX = "hostsnap-"


class Step(steps.StepName):
    RBD_DIRECT = "rbd-direct"  # RBD disks are snapshotted frozen, without the short freeze
    PLAN = "plan"  # what the job will make (a Plan), before any of it exists
    OVERLAYS_CREATED = "overlays-created"  # the new overlay files exist, unused
    RBD_SNAPSHOT = "rbd-snapshot"  # an RBD snapshot is about to be created
    SWITCH_ACTIVE = "switch-active"  # the disks are about to switch to their overlays
    MERGE_BACK = "merge-back"  # an RBD disk is about to go back from its temporary overlay
    MERGED_BACK = "merged-back"  # every RBD disk is back on its image
    UNDO = "undo"  # the job failed: what it made is about to be taken back


@dataclass(frozen=True)
class RbdDirect:
    reason: str


@dataclass(frozen=True)
class RbdSnapshot:
    target: str
    name: str


@dataclass(frozen=True)
class MergeBack:
    target: str
    overlay: str


@dataclass
class Plan:
    """What the job will make, written to the journal before any of it exists."""

    live: bool
    snapshot_ids: dict[str, str]  # target -> snapshot id
    overlays: dict[str, str] = field(default_factory=dict)  # target -> new overlay path
    actives: dict[str, str] = field(default_factory=dict)  # target -> active image before
    rbd_snaps: dict[str, str] = field(default_factory=dict)  # target -> RBD snapshot name
    # The short freeze (rbd_overlay.py): target -> temporary local overlay, and the RBD
    # disk's definition to put back.
    rbd_overlays: dict[str, str] = field(default_factory=dict)
    rbd_disks: dict[str, str] = field(default_factory=dict)

    def pending_layers(self, domain: str) -> dict[str, dict[str, str]]:
        """The stale-layer entries this snapshot will create, for the hook to honour from
        before the switch (an agent that dies after it must not let the old image boot)."""
        return {
            self.actives[t]: {"domain": domain, "target": t, "active": overlay}
            for t, overlay in self.overlays.items()
        }


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
    chosen = volumes.select(volumes.domain_volumes(svc, request.domain), request.disks)
    if not chosen:
        raise Precondition(f"domain {request.domain} has no disk hostsnap can snapshot")
    hold = _group_hold(svc, request)

    _check(svc, request, chosen)  # a refused request does not use up its idempotency key

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
            current = volumes.select(volumes.domain_volumes(svc, request.domain), request.disks)
            live = _check(svc, request, current)
            return _snapshot(svc, job_id, request, current, live, hold)

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


def _check(svc: Services, request: SnapshotRequest, chosen: list[Volume]) -> bool:
    """The checks before anything changes; True if live. Made twice: before the job
    exists (a refused request does not use up its idempotency key), and again once the job
    holds its locks and is admitted, on the disks and the domain as they are then."""
    state, _ = svc.host.state(request.domain)
    live = volumes.is_live(state)
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
    return live


def _plan(
    svc: Services, job_id: str, domain: str, chosen: list[Volume], live: bool, grouped: bool
) -> Plan:
    plan = Plan(live=live, snapshot_ids={v.target: uuid.uuid4().hex for v in chosen})
    # A group member's guest stays frozen for the whole group whatever its disks do: the
    # short freeze would only add an overlay and a merge back, so its RBD snapshots are
    # taken while frozen (rbd-frozen-across).
    unusable = (
        "a consistency group holds the guest frozen across the snapshot"
        if grouped and any(v.kind == VolumeKind.RBD for v in chosen)
        else rbd_overlay.unusable_because(svc, chosen, live)
    )
    if unusable and any(v.kind == VolumeKind.RBD for v in chosen) and live:
        level = logging.INFO if grouped else logging.WARNING
        log.log(level, "domain %s: RBD snapshot without the short freeze: %s", domain, unusable)
        steps.write(svc.journal, job_id, Step.RBD_DIRECT, RbdDirect(unusable))
    xml = svc.host.xml(domain)
    for volume in chosen:
        sid = plan.snapshot_ids[volume.target]
        if volume.kind == VolumeKind.FILE:
            # The active image and its format as libvirt has them (the disk's source and
            # driver type): what the new overlay must be backed by.
            assert volume.path is not None
            plan.actives[volume.target] = volume.path
            plan.overlays[volume.target] = volumes.overlay_path(volume.path, sid)
        else:
            plan.rbd_snaps[volume.target] = f"{RBD_PREFIX}{sid}"
            if not unusable:
                plan.rbd_overlays[volume.target] = rbd_overlay.overlay_path(svc, volume, sid)
                plan.rbd_disks[volume.target] = domain_xml.disk_element(xml, volume.target)
    return plan


def _snapshot(
    svc: Services,
    job_id: str,
    request: SnapshotRequest,
    chosen: list[Volume],
    live: bool,
    hold: GroupHold | None = None,
) -> SnapshotResult:
    by_target = {v.target: v for v in chosen}
    jobrun.checkpoint(svc, job_id, "planning")
    plan = _plan(svc, job_id, request.domain, chosen, live, hold is not None)
    steps.write(svc.journal, job_id, Step.PLAN, plan)
    frozen_across = {t: s for t, s in plan.rbd_snaps.items() if t not in plan.rbd_overlays}
    after_thaw = {t: s for t, s in plan.rbd_snaps.items() if t in plan.rbd_overlays}
    try:
        for target, overlay in plan.overlays.items():
            qemu_img.create_overlay(overlay, plan.actives[target])
        for target, overlay in plan.rbd_overlays.items():
            rbd_overlay.create(svc, by_target[target], overlay)
        steps.write(svc.journal, job_id, Step.OVERLAYS_CREATED)
        faults.point("after-overlay-created")
        svc.publish_layers(plan.pending_layers(request.domain))

        window_of = (
            consistency.held(svc, job_id, request.domain, hold)
            if hold
            else consistency.window(svc, job_id, request, live, len(chosen))
        )
        with window_of as window:
            _rbd_snapshots(svc, job_id, frozen_across, by_target)
            if plan.overlays or plan.rbd_overlays:
                steps.write(svc.journal, job_id, Step.SWITCH_ACTIVE)
                _switch_to_overlays(svc, request.domain, plan, live)
                faults.point("after-libvirt-snapshot")
        thawed = quiesce.Thawed(window.frozen_seconds)
        steps.write(svc.journal, job_id, quiesce.Step.THAWED, thawed)
        # The RBD images receive no writes now: their snapshots are the disks at the freeze.
        _rbd_snapshots(svc, job_id, after_thaw, by_target)
        faults.point("before-merge-back")
        merge_back(svc, job_id, request.domain, plan)
    except BaseException:
        steps.write(svc.journal, job_id, Step.UNDO)
        undo(svc, job_id, request.domain, plan, by_target)
        raise
    return commit_result(svc, job_id, request, by_target, plan, window)


def _rbd_snapshots(
    svc: Services, job_id: str, snaps: dict[str, str], by_target: dict[str, Volume]
) -> None:
    for target, snap in snaps.items():
        source = by_target[target].rbd
        assert source is not None
        steps.write(svc.journal, job_id, Step.RBD_SNAPSHOT, RbdSnapshot(target, snap))
        svc.rbd.create_snapshot(source, snap)
        faults.point("during-rbd-snapshot")


def merge_back(svc: Services, job_id: str, domain: str, plan: Plan) -> None:
    """Puts each RBD disk of the short freeze back on its image (again, after an agent that
    died while at it)."""
    for target, overlay in plan.rbd_overlays.items():
        begun = _merge_back_begun(svc, job_id, target)
        steps.write(svc.journal, job_id, Step.MERGE_BACK, MergeBack(target, overlay))
        rbd_overlay.merge_back(svc, job_id, domain, target, overlay, plan.rbd_disks[target], begun)
    if plan.rbd_overlays:
        steps.write(svc.journal, job_id, Step.MERGED_BACK)


def _merge_back_begun(svc: Services, job_id: str, target: str) -> bool:
    started = steps.read_all(svc.journal.get(job_id), Step.MERGE_BACK, MergeBack)
    return any(m.target == target for m in started)


def _switch_to_overlays(svc: Services, domain: str, plan: Plan, live: bool) -> None:
    if live:
        svc.host.snapshot_external(
            domain,
            {**plan.overlays, **plan.rbd_overlays},
            domain_xml.all_targets(svc.host.xml(domain)),
        )
        return
    xml = svc.host.xml(domain, inactive=True)
    for target, overlay in plan.overlays.items():
        xml = domain_xml.with_disk_source(xml, target, overlay)
    svc.host.define(xml)


def undo(svc: Services, job_id: str, domain: str, plan: Plan, by_target: dict[str, Volume]) -> None:
    """Takes back every part a failed snapshot made, judging by what libvirt and Ceph show
    (a call that raised may still have done its work)."""
    for target, overlay in plan.rbd_overlays.items():
        begun = _merge_back_begun(svc, job_id, target)
        try:  # first: until then the guest's newest data is in the overlay alone
            rbd_overlay.merge_back(
                svc, job_id, domain, target, overlay, plan.rbd_disks[target], begun
            )
        except HostsnapError as e:
            log.error("undo: %s/%s is still on overlay %s: %s", domain, target, overlay, e)
    for target, name in plan.rbd_snaps.items():
        source = by_target[target].rbd
        assert source is not None
        try:
            svc.rbd.remove_snapshot(source, name)
        except HostsnapError as e:
            log.error("undo: could not remove %s@%s: %s", source.spec, name, e)
    for target, overlay in plan.overlays.items():
        old = plan.actives[target]
        try:
            if volumes.current_active(svc, domain, target) == overlay:
                # The overlay is the active image already: merge it back into the old one.
                control = merge.Control(job_id)
                merge.merge_into_backing(svc, domain, target, overlay, old, plan.live, control)
                merge.remove_layer(svc, overlay, old)
            else:
                merge.remove_unused_overlay(overlay)
        except HostsnapError as e:
            log.error("undo: %s/%s keeps overlay %s: %s", domain, target, overlay, e)
            if volumes.current_active(svc, domain, target) == overlay:
                svc.journal.set_active_layer(domain, target, overlay, [old])
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
    for target, volume in by_target.items():
        sid = plan.snapshot_ids[target]
        if volume.kind == VolumeKind.FILE:
            content, active = plan.actives[target], plan.overlays[target]
            svc.journal.set_active_layer(request.domain, target, active, [content])
        else:
            content = f"{volume.location}@{plan.rbd_snaps[target]}"
            active = volume.location
        svc.journal.add_snapshot(
            SnapshotRecord(
                id=sid,
                name=request.name or sid[:8],
                domain=request.domain,
                target=target,
                kind=volume.kind,
                content=content,
                overlay=plan.overlays.get(target),
                consistency=window.consistency,
                created=now,
                job_id=job_id,
                deleted=None,
            )
        )
        if volume.kind == VolumeKind.FILE:
            method = "qcow2-overlay"
        else:
            method = "rbd-short-freeze" if target in plan.rbd_overlays else "rbd-frozen-across"
        disks.append(DiskSnapshot(target, volume.kind, sid, content, active, method))
    svc.publish_layers()
    return SnapshotResult(
        job_id=job_id,
        domain=request.domain,
        consistency=window.consistency,
        frozen_seconds=window.frozen_seconds,
        disks=tuple(disks),
        quiesce_note=window.note,
    )


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    """Ends a snapshot the agent's death interrupted: completed when all of it was made (and
    not a group member's), else taken back."""
    plan = steps.read(job, Step.PLAN, Plan)
    if plan is None:
        return JobState.FAILED, "it stopped before changing anything"
    # First the RBD disks of a short freeze go back on their images (the guest's newest
    # data is in the overlays until then); then the disks are as the job found them.
    merge_back(svc, job.id, job.domain, plan)
    by_target = {t: volumes.of_target(svc, job.domain, t) for t in plan.snapshot_ids}
    switched = all(
        volumes.current_active(svc, job.domain, t) == overlay
        for t, overlay in plan.overlays.items()
    )
    rbd_made = all(
        name in {s.name for s in svc.rbd.snapshots(volumes.rbd_source(svc, job.domain, t))}
        for t, name in plan.rbd_snaps.items()
    )
    taken = rbd_made and switched and (not plan.overlays or steps.reached(job, Step.SWITCH_ACTIVE))
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
