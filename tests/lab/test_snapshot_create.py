"""Create: quiesced snapshots of the running lab guests, qcow2 and RBD."""

from __future__ import annotations

import json
import uuid

import libvirt
import pytest

from agent.errors import Conflict, Precondition
from agent.model import Consistency, Quiesce, SnapshotRequest, VolumeKind
from agent.operations import listing, snapshot
from agent.operations.services import Services
from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab

from .support import chain, disk_source, has_marker, rbd_snapshots, start, stop, write_marker


def test_quiesced_qcow2_snapshot_is_application_consistent_and_leaves_guest_thawed(
    lab: Lab, conn: libvirt.virConnect, svc: Services
):
    dom = conn.lookupByName("lab-qcow2")
    before = disk_source(dom)

    result = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))

    assert result.consistency == Consistency.APPLICATION
    assert 0 < result.frozen_seconds < svc.config.freeze_deadline
    assert guest_agent.fsfreeze_status(dom) == "thawed"
    (disk,) = result.disks
    assert disk.kind == VolumeKind.FILE and disk.content == before
    assert disk.active_image == disk_source(dom) != before
    assert chain(disk.active_image)[:2] == [disk.active_image, before]
    assert disk_source(dom, inactive=True) == disk.active_image  # the definition follows
    stale = json.loads((lab.agent_state / "layers.json").read_text())
    assert stale[before]["active"] == disk.active_image
    (volume,) = listing.list_snapshots(svc, "lab-qcow2")
    listed = {s.id: s for s in volume.snapshots}[disk.snapshot_id]
    assert listed.chain_position == 1 and listed.consistency == Consistency.APPLICATION
    assert listed.size_on_disk is not None and listed.size_on_disk > 0
    assert volume.chain_depth == len(chain(disk.active_image))


def test_quiesced_rbd_snapshot_is_made_in_the_agents_namespace(
    lab: Lab, conn: libvirt.virConnect, svc: Services
):
    result = snapshot.create(svc, SnapshotRequest("lab-rbd", quiesce=Quiesce.REQUIRED))

    assert result.consistency == Consistency.APPLICATION
    assert guest_agent.fsfreeze_status(conn.lookupByName("lab-rbd")) == "thawed"
    (disk,) = result.disks
    assert disk.active_image == "rbd/lab-rbd"
    assert f"hostsnap-{disk.snapshot_id}" in rbd_snapshots(lab)
    (volume,) = listing.list_snapshots(svc, "lab-rbd")
    assert volume.snapshots[0].id == disk.snapshot_id  # newest first
    assert volume.snapshots[0].created > 0


def test_quiesce_none_is_reported_as_crash_consistent_without_freezing(
    conn: libvirt.virConnect, svc: Services
):
    result = snapshot.create(svc, SnapshotRequest("lab-rbd", quiesce=Quiesce.NONE))
    assert result.consistency == Consistency.CRASH
    assert result.frozen_seconds == 0
    assert "not requested" in result.quiesce_note


def test_a_guest_frozen_by_someone_else_is_left_frozen_and_not_counted_as_quiesced(
    conn: libvirt.virConnect, svc: Services
):
    dom = conn.lookupByName("lab-rbd")
    assert dom.fsFreeze() >= 1  # an administrator's freeze
    try:
        with pytest.raises(Precondition) as refused:
            snapshot.create(svc, SnapshotRequest("lab-rbd", quiesce=Quiesce.REQUIRED))
        assert refused.value.reason == "GUEST_ALREADY_FROZEN"
        assert guest_agent.fsfreeze_status(dom) == "frozen"

        result = snapshot.create(svc, SnapshotRequest("lab-rbd", quiesce=Quiesce.PREFERRED))

        assert result.consistency == Consistency.CRASH
        assert guest_agent.fsfreeze_status(dom) == "frozen"  # still the administrator's
    finally:
        dom.fsThaw()
    assert guest_agent.fsfreeze_status(dom) == "thawed"


def test_same_idempotency_key_returns_the_same_job_and_makes_one_snapshot(lab: Lab, svc: Services):
    key = uuid.uuid4().hex
    first = snapshot.create(svc, SnapshotRequest("lab-rbd", idempotency_key=key))
    count = len(rbd_snapshots(lab))
    second = snapshot.create(svc, SnapshotRequest("lab-rbd", idempotency_key=key))
    assert second == first
    assert len(rbd_snapshots(lab)) == count


def test_a_held_volume_refuses_a_second_job_naming_the_holder(svc: Services):
    with (
        svc.locks.hold(["lab-rbd/vda"], "job-that-holds-it", "delete"),
        pytest.raises(Conflict, match="job-that-holds-it \\(delete\\)"),
    ):
        snapshot.create(svc, SnapshotRequest("lab-rbd"))


def test_a_running_libvirt_block_job_is_a_conflict(conn: libvirt.virConnect, svc: Services):
    dom = conn.lookupByName("lab-qcow2")
    if len(chain(disk_source(dom))) < 2:
        snapshot.create(svc, SnapshotRequest("lab-qcow2"))
    # Someone else's block pull, throttled so it is still running when we ask.
    dom.blockPull("vda", 1, 0)
    try:
        with pytest.raises(Conflict, match="block job"):
            snapshot.create(svc, SnapshotRequest("lab-qcow2"))
    finally:
        dom.blockJobAbort("vda", 0)


def test_a_stopped_domain_gets_an_offline_overlay_and_boots_from_it(
    lab: Lab, conn: libvirt.virConnect, svc: Services
):
    dom = conn.lookupByName("lab-qcow2")
    write_marker(dom, "before-offline-snapshot")
    stop(dom)  # destroyed, not shut down cleanly: only crash consistency is true
    try:
        before = disk_source(dom, inactive=True)
        with pytest.raises(Precondition, match="not shut down cleanly"):
            snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
        assert disk_source(dom, inactive=True) == before

        result = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.PREFERRED))
        assert result.consistency == Consistency.CRASH
        assert "not shut down cleanly" in result.quiesce_note
        (disk,) = result.disks
        assert disk.content == before
        assert disk_source(dom, inactive=True) == disk.active_image
        assert chain(disk.active_image)[:2] == [disk.active_image, before]
    finally:
        start(dom)
    assert disk_source(dom) == disk.active_image
    assert has_marker(dom, "before-offline-snapshot")
