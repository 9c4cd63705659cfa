"""What a snapshot makes of each disk: one strategy per disk, chosen when the job plans, and
the plan that holds them (snapshot.py runs the phases; this module says what each disk does
in each).

                 prepare              in the window         after the thaw        undo
  FileOverlay    a qcow2 overlay      switches to it        -                     merge it back
  Offline        a qcow2 overlay      the definition        -                     qemu-img commit
                                      names it
  RbdShortFreeze a local overlay      switches to it        RBD snapshot, then    merge back,
                 over the image                             merge back            remove snapshot
  RbdFrozenAcross -                   RBD snapshot          -                     remove snapshot

The switches of a running domain are one libvirt call for all its disks (Plan.switches).
An RBD disk of a shut-off domain is an RbdFrozenAcross: its window freezes nothing.

The journal holds a plan in the form the releases before these strategies wrote, parallel
maps by target (PlanRecord); Plan.record() writes that form and Plan.from_record reads it, so
a journal reads the same to this release and to the one before. The snapshot's journal steps
are here too, as the disks write some of them (snapshot.py re-exports them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from agent import faults, steps
from agent.errors import HostsnapError, OperationFailed, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.model import DiskSnapshot, Volume, VolumeKind
from agent.operations import merge, rbd_overlay, volumes
from agent.operations.services import Services

log = logging.getLogger(__name__)

RBD_PREFIX = "hostsnap-"


class Step(steps.StepName):
    RBD_DIRECT = "rbd-direct"  # RBD disks are snapshotted frozen, without the short freeze
    PLAN = "plan"  # what the job will make (a PlanRecord), before any of it exists
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


@dataclass(frozen=True)
class Disk:
    """One disk's part of a snapshot. Each phase's default is to do nothing."""

    target: str
    snapshot_id: str

    method: ClassVar[str]  # DiskSnapshot.method: how the disk was snapshotted
    kind: ClassVar[VolumeKind]

    @property
    def switches_to(self) -> str | None:
        """The overlay the disk is on once switched, in the window (None: it stays)."""
        return None

    @property
    def new_layer(self) -> str | None:
        """The file layer that takes the disk's writes from the snapshot on."""
        return None

    def prepare(self, svc: Services, volume: Volume) -> None:
        """Before the window: what the switch needs (the overlay file)."""

    def in_window(self, svc: Services, job_id: str, volume: Volume) -> None:
        """While the guest is frozen (or the disks cut at one instant), before the switch."""

    def after_thaw(self, svc: Services, job_id: str, volume: Volume) -> None:
        """Once the guest runs again."""

    def back_on_image(self, svc: Services, job_id: str, domain: str) -> None:
        """The disk back on its own image, after the thaw, and first in an undo."""

    def undo(self, svc: Services, job_id: str, domain: str, volume: Volume) -> None:
        """Takes back what this disk got, judging by what libvirt and Ceph show; failures
        are logged, the other disks' undo goes on."""

    def made(self, svc: Services, domain: volumes.DomainNow) -> bool:
        """Recovery: whether libvirt and Ceph show this disk's part made."""
        raise NotImplementedError

    def commit(self, svc: Services, domain: str, volume: Volume) -> DiskSnapshot:
        """The disk's result, its new active layer recorded."""
        raise NotImplementedError

    def journal_form(self) -> dict[str, str]:
        """This disk's entries in PlanRecord's maps (map name -> value for the target)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _NewLayer(Disk):
    """A file disk that gets a new qcow2 overlay over its active image."""

    active: str  # the active image before: the overlay's backing file, the snapshot's content
    overlay: str  # the new overlay: the disk's active image after

    method: ClassVar[str] = "qcow2-overlay"
    kind: ClassVar[VolumeKind] = VolumeKind.FILE
    live: ClassVar[bool]

    @property
    def switches_to(self) -> str | None:
        return self.overlay

    @property
    def new_layer(self) -> str | None:
        return self.overlay

    def prepare(self, svc: Services, volume: Volume) -> None:
        qemu_img.create_overlay(self.overlay, self.active)

    def pending_layer(self, domain: str) -> tuple[str, dict[str, str]]:
        """The stale-layer entry the switch creates (the old active image must not boot)."""
        return self.active, {"domain": domain, "target": self.target, "active": self.overlay}

    def undo(self, svc: Services, job_id: str, domain: str, volume: Volume) -> None:
        target, overlay, old = self.target, self.overlay, self.active
        try:
            if volumes.current_active(svc, domain, target) == overlay:
                # The overlay is the active image already: merge it back into the old one.
                control = merge.Control(job_id)
                merge.merge_into_backing(svc, domain, target, overlay, old, self.live, control)
                merge.remove_layer(svc, overlay, old)
            else:
                merge.remove_unused_overlay(overlay)
        except HostsnapError as e:
            log.error("undo: %s/%s keeps overlay %s: %s", domain, target, overlay, e)
            if volumes.current_active(svc, domain, target) == overlay:
                svc.journal.set_active_layer(domain, target, overlay, [old])

    def made(self, svc: Services, domain: volumes.DomainNow) -> bool:
        return domain.active(self.target) == self.overlay

    def commit(self, svc: Services, domain: str, volume: Volume) -> DiskSnapshot:
        svc.journal.set_active_layer(domain, self.target, self.overlay, [self.active])
        return DiskSnapshot(
            self.target, self.kind, self.snapshot_id, self.active, self.overlay, self.method
        )

    def journal_form(self) -> dict[str, str]:
        return {"overlays": self.overlay, "actives": self.active}


@dataclass(frozen=True)
class FileOverlay(_NewLayer):
    """A file disk of a running domain: it switches to its overlay by an external snapshot."""

    live: ClassVar[bool] = True


@dataclass(frozen=True)
class Offline(_NewLayer):
    """A file disk of a shut-off domain: the definition names its overlay."""

    live: ClassVar[bool] = False


@dataclass(frozen=True)
class _RbdSnap(Disk):
    """An RBD disk that gets an RBD snapshot."""

    snap: str  # the RBD snapshot's name

    kind: ClassVar[VolumeKind] = VolumeKind.RBD

    def _take(self, svc: Services, job_id: str, volume: Volume) -> None:
        assert volume.rbd is not None
        steps.write(svc.journal, job_id, Step.RBD_SNAPSHOT, RbdSnapshot(self.target, self.snap))
        svc.rbd.create_snapshot(volume.rbd, self.snap)
        faults.point(faults.Step.DURING_RBD_SNAPSHOT)

    def undo(self, svc: Services, job_id: str, domain: str, volume: Volume) -> None:
        source = volume.rbd
        assert source is not None
        try:
            svc.rbd.remove_snapshot(source, self.snap)
        except HostsnapError as e:
            log.error("undo: could not remove %s@%s: %s", source.spec, self.snap, e)

    def made(self, svc: Services, domain: volumes.DomainNow) -> bool:
        source = domain.volume(self.target).rbd
        if source is None:
            raise Precondition(
                f"disk {self.target} of {domain.name} is not on RBD now", reason="NOT_RBD"
            )
        return self.snap in {s.name for s in svc.rbd.snapshots(source)}

    def commit(self, svc: Services, domain: str, volume: Volume) -> DiskSnapshot:
        content = f"{volume.location}@{self.snap}"
        return DiskSnapshot(
            self.target, self.kind, self.snapshot_id, content, volume.location, self.method
        )

    def journal_form(self) -> dict[str, str]:
        return {"rbd_snaps": self.snap}


@dataclass(frozen=True)
class RbdFrozenAcross(_RbdSnap):
    """An RBD disk snapshotted while the guest is frozen (the short freeze unusable)."""

    method: ClassVar[str] = "rbd-frozen-across"

    def in_window(self, svc: Services, job_id: str, volume: Volume) -> None:
        self._take(svc, job_id, volume)


@dataclass(frozen=True)
class RbdShortFreeze(_RbdSnap):
    """An RBD disk of the short freeze (rbd_overlay.py): on a local overlay while frozen, its
    image snapshotted after the thaw, then the overlay merged back."""

    overlay: str  # the temporary local overlay over the image
    disk_xml: str  # the disk's definition, to put back

    method: ClassVar[str] = "rbd-short-freeze"

    @property
    def switches_to(self) -> str | None:
        return self.overlay

    def prepare(self, svc: Services, volume: Volume) -> None:
        rbd_overlay.create(svc, volume, self.overlay)

    def after_thaw(self, svc: Services, job_id: str, volume: Volume) -> None:
        # The image receives no writes now: its snapshot is the disk at the freeze.
        self._take(svc, job_id, volume)

    def back_on_image(self, svc: Services, job_id: str, domain: str) -> None:
        """Again after an agent that died while at it."""
        started = steps.read_all(svc.journal.get(job_id), Step.MERGE_BACK, MergeBack)
        begun = any(m.target == self.target for m in started)
        steps.write(svc.journal, job_id, Step.MERGE_BACK, MergeBack(self.target, self.overlay))
        rbd_overlay.merge_back(svc, job_id, domain, self.target, self.overlay, self.disk_xml, begun)

    def journal_form(self) -> dict[str, str]:
        return {**super().journal_form(), "rbd_overlays": self.overlay, "rbd_disks": self.disk_xml}


def for_volume(
    svc: Services,
    volume: Volume,
    snapshot_id: str,
    live: bool,
    short_freeze: bool,
    xml: str,
) -> Disk:
    """The strategy for one disk; `xml` is the domain's as planned (the RBD disk's definition
    to put back after the short freeze)."""
    if volume.kind == VolumeKind.FILE:
        # The active image as libvirt has it (the disk's source): the overlay's backing file.
        assert volume.path is not None
        overlay = volumes.overlay_path(volume.path, snapshot_id)
        return (FileOverlay if live else Offline)(volume.target, snapshot_id, volume.path, overlay)
    snap = f"{RBD_PREFIX}{snapshot_id}"
    if not short_freeze:
        return RbdFrozenAcross(volume.target, snapshot_id, snap)
    overlay = rbd_overlay.overlay_path(svc, volume, snapshot_id)
    element = domain_xml.disk_element(xml, volume.target)
    return RbdShortFreeze(volume.target, snapshot_id, snap, overlay, element)


@dataclass(frozen=True)
class PlanRecord:
    """The `plan` step's details as the journal holds them, in the form of the releases
    before the strategies (maps by target); read and written unchanged, so journals stay
    readable both ways. A map an older release did not write reads as empty."""

    live: bool
    snapshot_ids: dict[str, str]  # target -> snapshot id (every disk of the job)
    overlays: dict[str, str] = field(default_factory=dict)  # file: target -> new overlay
    actives: dict[str, str] = field(default_factory=dict)  # file: target -> active before
    rbd_snaps: dict[str, str] = field(default_factory=dict)  # RBD: target -> snapshot name
    # The short freeze: target -> temporary local overlay, and the disk's definition.
    rbd_overlays: dict[str, str] = field(default_factory=dict)
    rbd_disks: dict[str, str] = field(default_factory=dict)

    def switches(self) -> dict[str, str]:
        """target -> the overlay the disk switches to in the window."""
        return {**self.overlays, **self.rbd_overlays}


@dataclass(frozen=True)
class Plan:
    """What the job will make, disk by disk, written to the journal before any of it exists."""

    live: bool
    disks: tuple[Disk, ...]

    @classmethod
    def from_record(cls, record: PlanRecord) -> Plan:
        return cls(
            record.live,
            tuple(_from_record(record, t, sid) for t, sid in record.snapshot_ids.items()),
        )

    def record(self) -> PlanRecord:
        maps: dict[str, dict[str, str]] = {
            name: {} for name in ("overlays", "actives", "rbd_snaps", "rbd_overlays", "rbd_disks")
        }
        for disk in self.disks:
            for name, value in disk.journal_form().items():
                maps[name][disk.target] = value
        ids = {d.target: d.snapshot_id for d in self.disks}
        return PlanRecord(self.live, ids, **maps)

    def switches(self) -> dict[str, str]:
        """target -> the overlay each switching disk is on once switched."""
        return {d.target: d.switches_to for d in self.disks if d.switches_to is not None}

    def new_layers(self) -> list[_NewLayer]:
        return [d for d in self.disks if isinstance(d, _NewLayer)]

    def short_freezes(self) -> list[RbdShortFreeze]:
        return [d for d in self.disks if isinstance(d, RbdShortFreeze)]

    def pending_layers(self, domain: str) -> dict[str, dict[str, str]]:
        """The stale-layer entries this snapshot will create, for the hook to honour from
        before the switch (an agent that dies after it must not let the old image boot)."""
        return dict(d.pending_layer(domain) for d in self.new_layers())


def _from_record(record: PlanRecord, target: str, snapshot_id: str) -> Disk:
    if target in record.overlays:
        new_layer = FileOverlay if record.live else Offline
        return new_layer(target, snapshot_id, record.actives[target], record.overlays[target])
    if target in record.rbd_overlays:
        return RbdShortFreeze(
            target,
            snapshot_id,
            record.rbd_snaps[target],
            record.rbd_overlays[target],
            record.rbd_disks[target],
        )
    if target in record.rbd_snaps:
        return RbdFrozenAcross(target, snapshot_id, record.rbd_snaps[target])
    raise OperationFailed(f"the journalled plan names disk {target} without saying what it got")
