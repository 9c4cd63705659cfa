"""Revert: a stopped guest's disk goes back to the snapshot; what was written after is gone,
what was written before is there; later layers are kept."""

from __future__ import annotations

import os
import subprocess

import libvirt
import pytest

from agent.errors import Precondition
from agent.model import Quiesce, SnapshotRequest
from agent.operations import revert, snapshot
from agent.operations.revert import RevertRequest
from agent.operations.services import Services
from hostsnap_lab.lab import Lab

from .support import chain, disk_source, has_marker, start, stop, storage_state, write_marker


@pytest.mark.parametrize("name", ["lab-qcow2", "lab-rbd"])
def test_revert_of_a_running_domain_is_refused_and_changes_nothing(
    lab: Lab, conn: libvirt.virConnect, svc: Services, name: str
):
    taken = snapshot.create(svc, SnapshotRequest(name, quiesce=Quiesce.REQUIRED))
    before = storage_state(lab, conn)
    with pytest.raises(Precondition, match=f"domain {name} is running; revert needs it shut off"):
        revert.revert(svc, RevertRequest(taken.disks[0].snapshot_id))
    assert storage_state(lab, conn) == before


@pytest.mark.parametrize("name", ["lab-qcow2", "lab-rbd"])
def test_revert_brings_back_the_snapshot_and_drops_later_writes(
    conn: libvirt.virConnect, svc: Services, name: str
):
    dom = conn.lookupByName(name)
    write_marker(dom, "before-snapshot")
    taken = snapshot.create(svc, SnapshotRequest(name, quiesce=Quiesce.REQUIRED))
    write_marker(dom, "after-snapshot")
    layers_before = chain(disk_source(dom)) if name == "lab-qcow2" else []
    stop(dom)
    try:
        result = revert.revert(svc, RevertRequest(taken.disks[0].snapshot_id, domain=name))
    finally:
        start(dom)
    assert has_marker(dom, "before-snapshot")
    assert not has_marker(dom, "after-snapshot")
    if name == "lab-qcow2":
        assert disk_source(dom) == result.active_image
        assert chain(result.active_image)[1] == taken.disks[0].content
        # The layers written after the snapshot are kept, not silently deleted.
        assert all(os.path.exists(p) for p in layers_before)
    else:
        assert result.active_image == "rbd/lab-rbd"


def test_rbd_rollback_reports_progress_to_the_end(lab: Lab, svc: Services):
    from agent.model import RbdSource

    rbd = ["rbd", "-c", str(lab.ceph_conf)]
    subprocess.run([*rbd, "create", "--size", "16M", "rbd/progress-probe"], check=True)
    try:
        subprocess.run([*rbd, "snap", "create", "rbd/progress-probe@start"], check=True)
        seen: list[float] = []
        svc.rbd.rollback(RbdSource("rbd", "progress-probe"), "start", seen.append)
        assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 2
    finally:
        subprocess.run([*rbd, "snap", "purge", "rbd/progress-probe"], capture_output=True)
        subprocess.run([*rbd, "rm", "rbd/progress-probe"], capture_output=True)
