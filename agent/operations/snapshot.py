"""Create: one request snapshots all (or some) disks of a domain, running or stopped, qcow2
and RBD together, frozen once; any failure undoes every part already made."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from agent import faults, validate
from agent.errors import HostsnapError, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, SnapshotRecord
from agent.model import (
    Consistency,
    DiskSnapshot,
    DomainState,
    Quiesce,
    SnapshotRequest,
    SnapshotResult,
    Volume,
    VolumeKind,
)
from agent.operations import jobrun, merge, volumes
from agent.operations.quiesce import FreezeWindow
from agent.operations.services import Services

log = logging.getLogger(__name__)

RBD_PREFIX = "hostsnap-"


@dataclass
class Plan:
    """What the job will make, written to the journal before any of it exists."""

    live: bool
    snapshot_ids: dict[str, str]  # target -> snapshot id
    overlays: dict[str, str] = field(default_factory=dict)  # target -> new overlay path
    actives: dict[str, str] = field(default_factory=dict)  # target -> active image before
    formats: dict[str, str] = field(default_factory=dict)  # target -> active image format
    rbd_snaps: dict[str, str] = field(default_factory=dict)  # target -> RBD snapshot name


def create(svc: Services, request: SnapshotRequest) -> SnapshotResult:
    validate.snapshot_name(request.name)
    chosen = volumes.select(volumes.domain_volumes(svc, request.domain), request.disks)
    if not chosen:
        raise Precondition(f"domain {request.domain} has no disk hostsnap can snapshot")
    state, _ = svc.host.state(request.domain)
    live = volumes.is_live(state)
    if not live and state != DomainState.SHUTOFF:
        raise Precondition(f"domain {request.domain} is {state}; snapshot it running or shut off")
    if live:
        for volume in chosen:
            volumes.ensure_no_block_job(svc, volume)
    volumes.check_file_pools(svc, chosen)
    if live and request.quiesce == Quiesce.REQUIRED:
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

    def body(job_id: str) -> SnapshotResult:
        return _snapshot(svc, job_id, request, chosen, live)

    return jobrun.run(
        svc,
        jobrun.JobSpec("snapshot", request.domain, [v.key for v in chosen], asdict(request)),
        request.idempotency_key,
        body,
        SnapshotResult.from_dict,
    )


def _plan(svc: Services, chosen: list[Volume], live: bool) -> Plan:
    plan = Plan(live=live, snapshot_ids={v.target: uuid.uuid4().hex for v in chosen})
    for volume in chosen:
        sid = plan.snapshot_ids[volume.target]
        if volume.kind == VolumeKind.FILE:
            active = volumes.file_chain(svc, volume, live)[0]
            plan.actives[volume.target] = active.path
            plan.formats[volume.target] = active.format
            plan.overlays[volume.target] = volumes.overlay_path(active.path, sid)
        else:
            plan.rbd_snaps[volume.target] = f"{RBD_PREFIX}{sid}"
    return plan


def _snapshot(
    svc: Services, job_id: str, request: SnapshotRequest, chosen: list[Volume], live: bool
) -> SnapshotResult:
    by_target = {v.target: v for v in chosen}
    plan = _plan(svc, chosen, live)
    svc.journal.record(job_id, "plan", **asdict(plan))
    made_rbd: list[str] = []
    switched = False
    try:
        for target, overlay in plan.overlays.items():
            qemu_img.create_overlay(overlay, plan.actives[target], plan.formats[target])
        svc.journal.record(job_id, "overlays-created")
        faults.point("after-overlay-created")

        with _consistency_window(svc, job_id, request, live) as window:
            for target, snap in plan.rbd_snaps.items():
                source = by_target[target].rbd
                assert source is not None
                svc.journal.record(job_id, "rbd-snapshot", target=target, name=snap)
                svc.rbd.create_snapshot(source, snap)
                made_rbd.append(target)
                faults.point("during-rbd-snapshot")
            if plan.overlays:
                svc.journal.record(job_id, "switch-active")
                _switch_to_overlays(svc, request.domain, plan, live)
                switched = True
                faults.point("after-libvirt-snapshot")
    except BaseException:
        _undo(svc, plan, by_target, made_rbd, switched)
        raise
    svc.journal.record(job_id, "thawed", frozen_seconds=window.frozen_seconds)
    return commit_result(svc, job_id, request, by_target, plan, window)


class Window:
    """The consistency a snapshot got: a freeze window, or none."""

    def __init__(self, consistency: Consistency, note: str = "", frozen: float = 0.0) -> None:
        self.consistency = consistency
        self.note = note
        self.frozen_seconds = frozen

    @classmethod
    def for_recovered(cls, job: Job, now: float) -> Window:
        """A snapshot the agent took before it died: frozen from the freeze step until
        recovery thawed the guest."""
        freeze = job.step("freeze")
        if freeze is not None:
            note = "completed by recovery; the guest stayed frozen until the agent restarted"
            return cls(Consistency.APPLICATION, note, now - freeze.at)
        if job.request["quiesce"] == Quiesce.NONE:
            return cls(Consistency.CRASH, "quiesce was not requested")
        return cls(Consistency.CRASH, "completed by recovery; the guest was not frozen")


@contextlib.contextmanager
def _consistency_window(
    svc: Services, job_id: str, request: SnapshotRequest, live: bool
) -> Iterator[Window]:
    if not live:
        clean = svc.host.shut_off_cleanly(request.domain)
        note = "" if clean else "the domain was not shut down cleanly"
        yield Window(Consistency.APPLICATION if clean else Consistency.CRASH, note)
        return
    if request.quiesce == Quiesce.NONE:
        yield Window(Consistency.CRASH, "quiesce was not requested")
        return
    freeze = _freeze(svc, job_id, request)
    if freeze is None:
        yield Window(Consistency.CRASH, "the guest could not be frozen")
        return
    window = Window(Consistency.APPLICATION)
    try:
        faults.point("after-freeze")
        yield window
    finally:
        freeze.close()
        window.frozen_seconds = freeze.frozen_seconds
    if freeze.watchdog_fired:
        message = (
            f"the snapshot took longer than the {svc.config.freeze_deadline:.1f} s freeze "
            "deadline and the guest was thawed before it completed"
        )
        if request.quiesce == Quiesce.REQUIRED:
            raise Precondition(message, reason="FREEZE_DEADLINE_EXCEEDED")
        window.consistency = Consistency.CRASH
        window.note = message


def _freeze(svc: Services, job_id: str, request: SnapshotRequest) -> FreezeWindow | None:
    """A started freeze; None when a `preferred` quiesce falls back to crash consistency."""
    try:
        freeze = FreezeWindow(
            svc.guest_agent(request.domain),
            svc.config.freeze_deadline,
            svc.monotonic,
            request.domain,
        )
        svc.journal.record(job_id, "freeze")
        freeze.start()
    except HostsnapError as e:
        if request.quiesce == Quiesce.REQUIRED:
            raise
        log.warning("domain %s: freeze failed (%s); crash-consistent", request.domain, e)
        return None
    return freeze


def _switch_to_overlays(svc: Services, domain: str, plan: Plan, live: bool) -> None:
    if live:
        targets = [v.target for v in domain_xml.volumes(domain, svc.host.xml(domain))]
        svc.host.snapshot_external(domain, plan.overlays, targets)
        return
    xml = svc.host.xml(domain, inactive=True)
    for target, overlay in plan.overlays.items():
        xml = domain_xml.with_disk_source(xml, target, overlay)
    svc.host.define(xml)


def _undo(
    svc: Services, plan: Plan, by_target: dict[str, Volume], made_rbd: list[str], switched: bool
) -> None:
    for target in made_rbd:
        source = by_target[target].rbd
        assert source is not None
        try:
            svc.rbd.remove_snapshot(source, plan.rbd_snaps[target])
        except HostsnapError as e:
            log.error("undo: could not remove %s@%s: %s", source.spec, plan.rbd_snaps[target], e)
    for target, overlay in plan.overlays.items():
        if switched:
            # The overlay is the active image already: merge it back into the old one.
            domain = by_target[target].domain
            try:
                merge.merge_into_backing(
                    svc, domain, target, overlay, plan.actives[target], plan.live
                )
            except HostsnapError as e:
                log.error("undo: %s/%s stays on overlay %s: %s", domain, target, overlay, e)
                svc.journal.set_active_layer(domain, target, overlay, [plan.actives[target]])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(overlay)


def commit_result(
    svc: Services,
    job_id: str,
    request: SnapshotRequest,
    by_target: dict[str, Volume],
    plan: Plan,
    window: Window,
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
        disks.append(DiskSnapshot(target, volume.kind, sid, content, active))
    svc.publish_layers()
    return SnapshotResult(
        job_id=job_id,
        domain=request.domain,
        consistency=window.consistency,
        frozen_seconds=window.frozen_seconds,
        disks=tuple(disks),
        quiesce_note=window.note,
    )
