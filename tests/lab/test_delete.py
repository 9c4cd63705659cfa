"""Delete: merging a snapshot's layer out keeps the guest's data and every other snapshot."""

from __future__ import annotations

import subprocess
import uuid

import libvirt
import pytest
import rados
import rbd

from agent.errors import NotFound, Precondition
from agent.model import Quiesce, SnapshotRequest
from agent.operations import delete, listing, snapshot
from agent.operations.delete import DeleteRequest
from agent.operations.services import Services
from hostsnap_lab.lab import Lab

from .support import (
    chain,
    disk_source,
    has_marker,
    rbd_snapshots,
    start,
    stop,
    storage_state,
    write_marker,
)


def image_copy(path: str, target: str) -> None:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, target], check=True)


def same_content(a: str, b: str) -> bool:
    done = subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
def test_deleting_qcow2_snapshots_merges_layers_and_keeps_other_snapshots(
    conn: libvirt.virConnect, svc: Services, tmp_path, running: bool
):
    dom = conn.lookupByName("lab-qcow2")
    older = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
    write_marker(dom, "between-snapshots")
    newer = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
    write_marker(dom, "after-snapshots")
    newer_content = newer.disks[0].content
    image_copy(newer_content, str(tmp_path / "newer.raw"))
    depth = len(chain(disk_source(dom)))
    if not running:
        stop(dom)
    try:
        # The older snapshot's layer takes in the layer above it (an intermediate layer).
        gone = delete.delete(svc, DeleteRequest(older.disks[0].snapshot_id))
        assert gone.removed == (newer_content,)
        (volume,) = listing.list_snapshots(svc, "lab-qcow2")
        ids = {s.id: s for s in volume.snapshots}
        assert older.disks[0].snapshot_id not in ids
        moved = ids[newer.disks[0].snapshot_id]
        assert moved.content == older.disks[0].content
        assert same_content(str(tmp_path / "newer.raw"), moved.content)
        # The newest snapshot's layer takes in the active image (active commit and pivot).
        last = delete.delete(svc, DeleteRequest(newer.disks[0].snapshot_id))
        assert last.active_image == older.disks[0].content
        assert len(chain(last.active_image)) == depth - 2
    finally:
        if not dom.isActive():
            start(dom)
    assert disk_source(dom) == last.active_image
    assert has_marker(dom, "between-snapshots") and has_marker(dom, "after-snapshots")


def test_deleting_an_rbd_snapshot_removes_only_it(lab: Lab, svc: Services):
    keep = snapshot.create(svc, SnapshotRequest("lab-rbd"))
    drop = snapshot.create(svc, SnapshotRequest("lab-rbd"))
    delete.delete(svc, DeleteRequest(drop.disks[0].snapshot_id))
    names = rbd_snapshots(lab)
    assert f"hostsnap-{drop.disks[0].snapshot_id}" not in names
    assert f"hostsnap-{keep.disks[0].snapshot_id}" in names
    with pytest.raises(NotFound):
        delete.delete(svc, DeleteRequest(drop.disks[0].snapshot_id))


def test_a_delete_sent_again_with_its_key_after_it_was_done_answers_with_its_job(svc: Services):
    taken = snapshot.create(svc, SnapshotRequest("lab-rbd"))
    request = DeleteRequest(taken.disks[0].snapshot_id, "lab-rbd", idempotency_key=uuid.uuid4().hex)
    first = delete.delete(svc, request)

    again = delete.delete(svc, request)  # the snapshot is gone; the job is not

    assert again == first


def rbd_image(lab: Lab):  # type: ignore[no-untyped-def]
    cluster = rados.Rados(conffile=str(lab.ceph_conf))
    cluster.connect()
    ioctx = cluster.open_ioctx("rbd")
    return cluster, ioctx


def test_protected_rbd_snapshot_with_a_clone_is_refused_and_without_one_is_removed(
    lab: Lab, conn: libvirt.virConnect, svc: Services
):
    with_clone = snapshot.create(svc, SnapshotRequest("lab-rbd")).disks[0].snapshot_id
    without_clone = snapshot.create(svc, SnapshotRequest("lab-rbd")).disks[0].snapshot_id
    cluster, ioctx = rbd_image(lab)
    try:
        with rbd.Image(ioctx, "lab-rbd") as image:
            image.protect_snap(f"hostsnap-{with_clone}")
            image.protect_snap(f"hostsnap-{without_clone}")
        rbd.RBD().clone(ioctx, "lab-rbd", f"hostsnap-{with_clone}", ioctx, "lab-rbd-clone")
        before = storage_state(lab, conn)
        with pytest.raises(Precondition, match="has clones \\(rbd/lab-rbd-clone\\)"):
            delete.delete(svc, DeleteRequest(with_clone))
        assert storage_state(lab, conn) == before

        delete.delete(svc, DeleteRequest(without_clone))
        assert f"hostsnap-{without_clone}" not in rbd_snapshots(lab)
    finally:
        rbd.RBD().remove(ioctx, "lab-rbd-clone")
        with rbd.Image(ioctx, "lab-rbd") as image:
            image.unprotect_snap(f"hostsnap-{with_clone}")
        ioctx.close()
        cluster.shutdown()


def test_foreign_rbd_snapshots_are_not_listed_or_touched(lab: Lab, svc: Services):
    cluster, ioctx = rbd_image(lab)
    try:
        with rbd.Image(ioctx, "lab-rbd") as image:
            image.create_snap(".mirror.primary.foreign")
            image.create_snap("cloudstack-snap-1")
        ours = snapshot.create(svc, SnapshotRequest("lab-rbd")).disks[0].snapshot_id
        (volume,) = listing.list_snapshots(svc, "lab-rbd")
        assert all(s.content.split("@")[1].startswith("hostsnap-") for s in volume.snapshots)
        delete.delete(svc, DeleteRequest(ours))
        assert {".mirror.primary.foreign", "cloudstack-snap-1"} <= set(rbd_snapshots(lab))
    finally:
        with rbd.Image(ioctx, "lab-rbd") as image:
            image.remove_snap(".mirror.primary.foreign")
            image.remove_snap("cloudstack-snap-1")
        ioctx.close()
        cluster.shutdown()


def test_a_live_delete_keeps_snapshots_on_the_branch_left_by_a_revert(
    conn: libvirt.virConnect, svc: Services, tmp_path
):
    from agent.operations import revert
    from agent.operations.revert import RevertRequest

    dom = conn.lookupByName("lab-qcow2")
    s1 = snapshot.create(svc, SnapshotRequest("lab-qcow2")).disks[0]
    write_marker(dom, "in-s2")
    s2 = snapshot.create(svc, SnapshotRequest("lab-qcow2")).disks[0]
    write_marker(dom, "in-s3")
    s3 = snapshot.create(svc, SnapshotRequest("lab-qcow2")).disks[0]
    image_copy(s3.content, str(tmp_path / "s3.raw"))
    stop(dom)
    try:
        revert.revert(svc, RevertRequest(s2.snapshot_id))
    finally:
        start(dom)
    # S1's layer takes in the layer above it in the running chain; the abandoned branch
    # (S3's content) was backed by that layer and must now read the same through S1's.
    delete.delete(svc, DeleteRequest(s1.snapshot_id))
    assert same_content(str(tmp_path / "s3.raw"), s3.content)
    assert chain(s3.content)[-1] == chain(disk_source(dom))[-1]
    assert has_marker(dom, "in-s2") and not has_marker(dom, "in-s3")
