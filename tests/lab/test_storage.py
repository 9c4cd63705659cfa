"""The storage the engine will drive: RBD through python3-rbd, qcow2 through qemu-img."""

from __future__ import annotations

import json
import subprocess
import uuid

import libvirt
import rados
import rbd

from hostsnap_lab.lab import Lab

from .support import disk_source


def test_rbd_image_is_created_and_snapshotted_with_python_rbd(lab: Lab):
    name = f"test-{uuid.uuid4().hex[:8]}"
    with (
        rados.Rados(conffile=str(lab.ceph_conf)) as cluster,
        cluster.open_ioctx(lab.rbd_pool) as ioctx,
    ):
        rbd.RBD().create(ioctx, name, 8 * 1024**2)
        try:
            with rbd.Image(ioctx, name) as image:
                image.write(b"before" * 100, 0)
                image.create_snap("hostsnap-test")
                image.write(b"after!" * 100, 0)
                assert [s["name"] for s in image.list_snaps()] == ["hostsnap-test"]
            with rbd.Image(ioctx, name, snapshot="hostsnap-test", read_only=True) as snap:
                assert snap.read(0, 600) == b"before" * 100
            with rbd.Image(ioctx, name) as image:
                assert image.read(0, 600) == b"after!" * 100
                image.remove_snap("hostsnap-test")
        finally:
            rbd.RBD().remove(ioctx, name)
        assert name not in rbd.RBD().list(ioctx)


def qemu_img_info(path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-img", "info", "--backing-chain", *extra, "--output=json", path],
        capture_output=True,
        text=True,
        check=False,
    )


def test_qemu_img_reads_the_chain_of_the_running_guests_qcow2_disk(
    lab: Lab, conn: libvirt.virConnect
):
    active = disk_source(conn.lookupByName("lab-qcow2"))
    # QEMU holds the active image's write lock, so a plain open is refused ...
    locked = qemu_img_info(active)
    assert locked.returncode != 0
    assert "lock" in locked.stderr
    # ... and -U (force share) reads it, down to the lab's original image.
    shared = qemu_img_info(active, "-U")
    assert shared.returncode == 0, shared.stderr
    chain = json.loads(shared.stdout)
    assert chain[0]["filename"] == active
    assert chain[-1]["filename"] == str(lab.qcow2_disk)
    assert {layer["format"] for layer in chain} == {"qcow2"}
    assert {layer["virtual-size"] for layer in chain} == {128 * 1024**2}
