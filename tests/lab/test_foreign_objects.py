"""Other actors on the same RBD images: CloudStack's protected snapshots, rbd-mirror's, a
clone v2 parent's in the trash, and snapshots removed while the agent reads. hostsnap lists
only its own, touches none of the others, and never fails a query because of them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import rados
import rbd

from agent.model import Quiesce, SnapshotRequest
from agent.operations import delete, listing, snapshot
from agent.operations.delete import DeleteRequest
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX
from hostsnap_lab.lab import Lab
from hostsnap_lab.run import run

IMAGE = "lab-rbd"


@dataclass(frozen=True)
class ForeignSnap:
    snap_id: int
    name: str
    namespace: int
    protected: bool


def all_snapshots(lab: Lab) -> dict[int, ForeignSnap]:
    with (
        rados.Rados(conffile=str(lab.ceph_conf)) as cluster,
        cluster.open_ioctx("rbd") as io,
        rbd.Image(io, IMAGE, read_only=True) as image,
    ):
        found = {}
        for s in image.list_snaps():
            user = s["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_USER
            protected = bool(image.is_protected_snap(s["name"])) if user else False
            found[s["id"]] = ForeignSnap(s["id"], s["name"], s["namespace"], protected)
        return found


def rbd_cli(lab: Lab, *args: str) -> None:
    run(["rbd", "-c", str(lab.ceph_conf), *args], timeout=60)


@pytest.fixture
def foreign_snapshots(lab: Lab) -> Iterator[dict[int, ForeignSnap]]:
    """One snapshot of each namespace another actor makes on the guest's image."""
    tag = uuid.uuid4().hex[:8]
    cloudstack, parent, clone = f"cs-{tag}", f"parent-{tag}", f"clone-{tag}"
    run(["ceph", "-c", str(lab.ceph_conf), "osd", "set-require-min-compat-client", "mimic"])
    rbd_cli(lab, "snap", "create", f"rbd/{IMAGE}@{cloudstack}")
    rbd_cli(lab, "snap", "protect", f"rbd/{IMAGE}@{cloudstack}")
    rbd_cli(lab, "mirror", "pool", "enable", "rbd", "image")
    rbd_cli(lab, "mirror", "image", "enable", f"rbd/{IMAGE}", "snapshot")  # a .mirror.primary
    rbd_cli(lab, "snap", "create", f"rbd/{IMAGE}@{parent}")
    rbd_cli(
        lab, "clone", "--rbd-default-clone-format", "2", f"rbd/{IMAGE}@{parent}", f"rbd/{clone}"
    )
    rbd_cli(lab, "snap", "rm", f"rbd/{IMAGE}@{parent}")  # into the trash namespace
    found = all_snapshots(lab)
    namespaces = {s.namespace for s in found.values()}
    assert {
        rbd.RBD_SNAP_NAMESPACE_TYPE_USER,
        rbd.RBD_SNAP_NAMESPACE_TYPE_MIRROR,
        rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH,
    } <= namespaces
    try:
        yield found
    finally:
        rbd_cli(lab, "rm", f"rbd/{clone}")  # its trashed parent snapshot goes with it
        rbd_cli(lab, "mirror", "image", "disable", f"rbd/{IMAGE}")  # and the mirror's
        rbd_cli(lab, "mirror", "pool", "disable", "rbd")
        rbd_cli(lab, "snap", "unprotect", f"rbd/{IMAGE}@{cloudstack}")
        rbd_cli(lab, "snap", "rm", f"rbd/{IMAGE}@{cloudstack}")


def test_foreign_snapshots_of_every_namespace_are_ignored_and_left_alone(
    lab: Lab, svc: Services, foreign_snapshots: dict[int, ForeignSnap]
):
    (before,) = listing.list_snapshots(svc, IMAGE)

    taken = snapshot.create(svc, SnapshotRequest(IMAGE, quiesce=Quiesce.REQUIRED))
    (listed,) = listing.list_snapshots(svc, IMAGE)
    delete.delete(svc, DeleteRequest(taken.disks[0].snapshot_id))
    (after,) = listing.list_snapshots(svc, IMAGE)

    ours = {s.id for s in listed.snapshots}
    assert ours == {s.id for s in before.snapshots} | {taken.disks[0].snapshot_id}
    assert all(f"@{RBD_PREFIX}" in s.content for s in listed.snapshots)
    assert {s.id for s in after.snapshots} == {s.id for s in before.snapshots}
    now = all_snapshots(lab)
    assert {i: now.get(i) for i in foreign_snapshots} == foreign_snapshots


def test_listing_survives_snapshots_removed_while_it_reads(lab: Lab, svc: Services):
    """Another actor creates and removes snapshots in a loop (some named as ours, as a
    concurrent job's would be) while the agent lists the image over and over."""
    stop = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        with (
            rados.Rados(conffile=str(lab.ceph_conf)) as cluster,
            cluster.open_ioctx("rbd") as io,
            rbd.Image(io, IMAGE) as image,
        ):
            while not stop.is_set():
                names = [f"{RBD_PREFIX}churn-{uuid.uuid4().hex[:8]}", f"churn-{churned}"]
                for name in names:
                    image.create_snap(name)
                image.protect_snap(names[1])
                image.unprotect_snap(names[1])
                for name in names:
                    image.remove_snap(name)
                churned += 1

    churner = threading.Thread(target=churn)
    churner.start()
    listings = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (churned < 20 or listings < 200):
            listing.list_snapshots(svc, IMAGE)
            listings += 1
    finally:
        stop.set()
        churner.join(timeout=60)
    assert churned >= 5 and listings >= 50, (churned, listings)
    assert not any("churn" in s.name for s in all_snapshots(lab).values())
