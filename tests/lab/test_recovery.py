"""Crash recovery: the agent process is killed (SIGKILL) at each named step; after restart
the guest is thawed, the chain consistent, the data intact and the job's state truthful."""

from __future__ import annotations

import os
import time
import uuid

import libvirt
import pytest

from agent.config import AgentConfig
from agent.jobs import JobState
from agent.operations import listing, recovery
from agent.operations.services import Services
from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab

from .support import (
    chain,
    disk_source,
    has_marker,
    run_agent_process,
    start,
    stop,
    storage_state,
    write_marker,
)

SNAPSHOT = (
    "from agent.model import SnapshotRequest, Quiesce\n"
    "from agent.operations import snapshot\n"
    "snapshot.create(svc, SnapshotRequest({domain!r}, quiesce=Quiesce.REQUIRED, "
    "idempotency_key={key!r}))\n"
)
REVERT = (
    "from agent.operations import revert\n"
    "revert.revert(svc, revert.RevertRequest({snapshot_id!r}, idempotency_key={key!r}))\n"
)


def writer_moves(dom: libvirt.virDomain) -> bool:
    first = int(guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/writer.seq"]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if int(guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/writer.seq"])) > first:
            return True
        time.sleep(0.5)
    return False


def recovered_job(svc: Services, key: str) -> recovery.Recovered:
    outcomes = recovery.recover(svc)
    (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
    return job


@pytest.mark.parametrize(
    ("domain", "fault", "outcome"),
    [
        ("lab-qcow2", "after-overlay-created", JobState.FAILED),
        ("lab-qcow2", "after-freeze", JobState.FAILED),
        ("lab-qcow2", "after-libvirt-snapshot", JobState.SUCCEEDED),
        ("lab-rbd", "after-freeze", JobState.FAILED),
        # The short freeze: the disk is on a local overlay from the switch to the merge back.
        ("lab-rbd", "after-libvirt-snapshot", JobState.FAILED),
        ("lab-rbd", "during-rbd-snapshot", JobState.SUCCEEDED),
        ("lab-rbd", "before-merge-back", JobState.SUCCEEDED),
        # QEMU's commit of the overlay goes on after the agent's death: recovery finishes it.
        ("lab-rbd", "during-merge-back", JobState.SUCCEEDED),
        ("lab-rbd", "after-merge-back-pivot", JobState.SUCCEEDED),
    ],
)
def test_agent_killed_during_snapshot_recovers_to_a_truthful_state(
    lab: Lab,
    conn: libvirt.virConnect,
    agent_config: AgentConfig,
    svc: Services,
    domain: str,
    fault: str,
    outcome: JobState,
):
    dom = conn.lookupByName(domain)
    marker = f"before-{fault}"
    write_marker(dom, marker)
    before = storage_state(lab, conn)
    key = uuid.uuid4().hex

    died = run_agent_process(agent_config, SNAPSHOT.format(domain=domain, key=key), fault)
    assert died.returncode == -9, died.stderr
    if fault in ("after-freeze", "after-libvirt-snapshot"):
        assert guest_agent.fsfreeze_status(dom) == "frozen"  # the agent died with it frozen
    if domain == "lab-rbd":
        # libvirt's pivot puts the disk back on RBD live and in the definition; the overlay
        # file, full of data now in the image, is left.
        on_overlay = fault not in ("after-freeze", "after-merge-back-pivot")
        assert ("<disk type='file'" in dom.XMLDesc(0)) == on_overlay

    job = recovered_job(svc, key)

    assert job.state == outcome, job.detail
    assert guest_agent.fsfreeze_status(dom) == "thawed"
    assert writer_moves(dom)
    assert has_marker(dom, marker)
    record = svc.journal.get(job.job_id)
    assert record.state == outcome
    if domain == "lab-rbd":
        assert "<source protocol='rbd'" in dom.XMLDesc(0)
        assert "<source protocol='rbd'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert not dom.blockJobInfo("vda", 0)
        assert not list(svc.config.rbd_overlay_dir.glob("*"))
    (volume,) = listing.list_snapshots(svc, domain)
    if outcome == JobState.FAILED:
        assert "interrupted by an agent restart" in (record.error or "")
        assert storage_state(lab, conn) == before
    else:
        (made,) = record.result["disks"]  # type: ignore[index]
        assert made["snapshot_id"] in {s.id for s in volume.snapshots}
        if domain == "lab-qcow2":
            assert disk_source(dom) == made["active_image"]
            assert chain(made["active_image"])[1] == made["content"]


@pytest.mark.parametrize("domain", ["lab-qcow2", "lab-rbd"])
def test_agent_killed_during_revert_recovers_to_a_truthful_state(
    lab: Lab, conn: libvirt.virConnect, agent_config: AgentConfig, svc: Services, domain: str
):
    from agent.model import Quiesce, SnapshotRequest
    from agent.operations import snapshot

    dom = conn.lookupByName(domain)
    # Named for this run: a marker an earlier, interrupted run left would be in the snapshot.
    run = uuid.uuid4().hex[:8]
    in_snapshot, after_point = f"in-snapshot-{run}", f"after-revert-point-{run}"
    write_marker(dom, in_snapshot)
    taken = snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.REQUIRED))
    write_marker(dom, after_point)
    stop(dom)
    try:
        before = storage_state(lab, conn)
        key = uuid.uuid4().hex
        code = REVERT.format(snapshot_id=taken.disks[0].snapshot_id, key=key)
        died = run_agent_process(agent_config, code, "during-revert")
        assert died.returncode == -9, died.stderr
        job = recovered_job(svc, key)
        if domain == "lab-qcow2":
            # The new overlay existed but the domain was not switched to it: rolled back.
            assert job.state == JobState.FAILED, job.detail
            assert storage_state(lab, conn) == before
        else:
            # An RBD rollback cannot be left half done: recovery ran it to completion.
            assert job.state == JobState.SUCCEEDED, job.detail
    finally:
        start(dom)
    assert has_marker(dom, in_snapshot)
    assert has_marker(dom, after_point) == (domain == "lab-qcow2")


DELETE = (
    "from agent.operations import delete\n"
    "delete.delete(svc, delete.DeleteRequest({snapshot_id!r}, idempotency_key={key!r}))\n"
)


@pytest.mark.parametrize("stopped_before_restart", [False, True], ids=["running", "stopped"])
def test_agent_killed_after_a_live_merge_never_writes_old_data_back(
    conn: libvirt.virConnect, agent_config: AgentConfig, svc: Services, stopped_before_restart: bool
):
    from agent.model import Quiesce, SnapshotRequest
    from agent.operations import snapshot

    dom = conn.lookupByName("lab-qcow2")
    taken = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
    top = taken.disks[0].active_image
    key = uuid.uuid4().hex
    code = DELETE.format(snapshot_id=taken.disks[0].snapshot_id, key=key)
    died = run_agent_process(agent_config, code, "after-merge")
    assert died.returncode == -9, died.stderr
    # The pivot happened: the guest now writes into the base, and the old top is stale.
    assert disk_source(dom) == taken.disks[0].content
    write_marker(dom, "written-after-pivot")
    if stopped_before_restart:
        stop(dom)
    try:
        job = recovered_job(svc, key)
        assert job.state == JobState.SUCCEEDED, job.detail
        assert not os.path.exists(top)
    finally:
        if not dom.isActive():
            start(dom)
    assert has_marker(dom, "written-after-pivot")
