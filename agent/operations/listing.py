"""List: each volume's snapshots, chain and chain depth. Only snapshots in the agent's own
namespace are listed; foreign RBD snapshots (CloudStack's, `.mirror.*`) are never counted."""

from __future__ import annotations

from agent.errors import HostsnapError
from agent.hypervisor import qemu_img
from agent.jobs import SnapshotRecord
from agent.model import Consistency, Snapshot, Volume, VolumeKind, VolumeSnapshots
from agent.operations import image_snapshot, volumes
from agent.operations.reread import read_consistently
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX


def list_snapshots(
    svc: Services, domain: str, disks: tuple[str, ...] = ()
) -> list[VolumeSnapshots]:
    return read_consistently(lambda: _list_snapshots(svc, domain, disks), f"domain {domain}")


def _list_snapshots(svc: Services, domain: str, disks: tuple[str, ...]) -> list[VolumeSnapshots]:
    chosen = volumes.select(volumes.domain_volumes(svc, domain), disks)
    live = volumes.is_live(svc.host.state(domain)[0])
    return [
        _file_volume(svc, v, live) if v.kind == VolumeKind.FILE else _rbd_volume(svc, v)
        for v in chosen
    ]


def list_images(svc: Services, images: tuple[str, ...]) -> list[VolumeSnapshots]:
    """RBD images by "pool/image", each with its snapshots (in use or not: nothing changes)."""
    return read_consistently(
        lambda: [_rbd_volume(svc, v) for v in image_snapshot.image_volumes(images)],
        ", ".join(images),
    )


def _snapshot(
    record: SnapshotRecord, size: int | None, position: int | None, protected: bool = False
) -> Snapshot:
    return Snapshot(
        id=record.id,
        name=record.name,
        domain=record.domain,
        target=record.target,
        kind=VolumeKind(record.kind),
        created=record.created,
        consistency=Consistency(record.consistency),
        content=record.content,
        size_on_disk=size,
        chain_position=position,
        protected=protected,
    )


def _file_volume(svc: Services, volume: Volume, live: bool) -> VolumeSnapshots:
    chain = volumes.file_chain(svc, volume, live)
    paths = [layer.path for layer in chain]
    found = []
    for record in svc.journal.snapshots(volume.domain, volume.target):
        if record.kind != VolumeKind.FILE:
            continue
        try:
            size = qemu_img.chain(record.content)[0].actual_size
        except HostsnapError:
            continue  # its layer is gone; nothing to list
        position = paths.index(record.content) if record.content in paths else None
        found.append(_snapshot(record, size, position))
    found.sort(key=lambda s: s.created, reverse=True)
    return VolumeSnapshots(volume, paths[0], tuple(chain), tuple(found))


def _rbd_volume(svc: Services, volume: Volume) -> VolumeSnapshots:
    assert volume.rbd is not None
    ours = [s for s in svc.rbd.snapshots(volume.rbd) if s.name.startswith(RBD_PREFIX)]
    ours.sort(key=lambda s: s.snap_id, reverse=True)
    records = {
        r.id: r
        for r in svc.journal.snapshots(volume.domain, volume.target)
        if r.kind == VolumeKind.RBD
    }
    found = []
    for position, snap in enumerate(ours):
        sid = snap.name.removeprefix(RBD_PREFIX)
        # The journal may know it by the image's other name: taken through a domain, or of
        # the image alone (rbd_images) while its VM was stopped.
        record = (
            records.get(sid)
            or _same_image(svc, sid, volume)
            or SnapshotRecord(
                id=sid,
                name=snap.name,
                domain=volume.domain,
                target=volume.target,
                kind=VolumeKind.RBD,
                content=f"{volume.location}@{snap.name}",
                overlay=None,
                consistency=Consistency.UNKNOWN,
                created=snap.created,
                job_id="",
                deleted=None,
            )
        )
        found.append(_snapshot(record, None, position, snap.protected))
    return VolumeSnapshots(volume, volume.location, (), tuple(found))


def _same_image(svc: Services, sid: str, volume: Volume) -> SnapshotRecord | None:
    record = svc.journal.snapshot(sid)
    if record is None or record.content != f"{volume.location}@{RBD_PREFIX}{sid}":
        return None
    return record
