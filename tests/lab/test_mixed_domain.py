"""A domain with a qcow2 disk and an RBD disk: frozen once, both disks snapshotted, and any
failure undoes every part already made."""

from __future__ import annotations

import dataclasses
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest

from agent.errors import OperationFailed, Unavailable
from agent.model import Consistency, Quiesce, SnapshotRequest, VolumeKind
from agent.operations import snapshot
from agent.operations.services import Services
from hostsnap_lab import domains, guest_agent
from hostsnap_lab.lab import Lab

from .support import chain, disk_source, qcow2_and_rbd_disks, rbd_snapshots, wait_for_agent

NAME = "lab-mixed"


def mixed_domain(lab: Lab) -> domains.LabDomain:
    disks = qcow2_and_rbd_disks(lab, lab.paths.pool / f"{NAME}.qcow2", NAME)
    return domains.LabDomain(NAME, disks)


@pytest.fixture(scope="module")
def mixed(lab: Lab, conn: libvirt.virConnect) -> Iterator[libvirt.virDomain]:
    rbd = ["rbd", "-c", str(lab.ceph_conf)]
    domains.remove(conn, NAME)
    for stale in lab.paths.pool.glob(f"{NAME}*"):
        stale.unlink()
    subprocess.run(["rbd", "-c", str(lab.ceph_conf), "rm", f"rbd/{NAME}"], capture_output=True)
    qcow2 = lab.paths.pool / f"{NAME}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(qcow2)],
        check=True,
    )
    subprocess.run([*rbd, "create", "--size", "64M", f"rbd/{NAME}"], check=True)
    domains.define_and_start(conn, lab.paths, mixed_domain(lab))
    dom = conn.lookupByName(NAME)
    wait_for_agent(dom)
    yield dom
    domains.remove(conn, NAME)
    subprocess.run([*rbd, "snap", "purge", f"rbd/{NAME}"], capture_output=True)
    subprocess.run([*rbd, "rm", f"rbd/{NAME}"], capture_output=True)
    for made in lab.paths.pool.glob(f"{NAME}*"):
        made.unlink()


def test_both_disks_are_snapshotted_in_one_freeze(
    lab: Lab, mixed: libvirt.virDomain, svc: Services
):
    result = snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED))
    assert result.consistency == Consistency.APPLICATION
    assert {(d.target, d.kind, d.method) for d in result.disks} == {
        ("vda", VolumeKind.FILE, "qcow2-overlay"),
        ("vdb", VolumeKind.RBD, "rbd-short-freeze"),
    }
    steps = [s.name for s in svc.journal.get(result.job_id).steps]
    assert steps.count("freeze") == 1 and steps.count("switch-active") == 1
    # One switch for both disks while frozen; the RBD snapshot after the thaw.
    order = ["freeze", "switch-active", "thawed", "rbd-snapshot", "merge-back", "merged-back"]
    assert [steps.index(s) for s in order] == sorted(steps.index(s) for s in order)
    rbd_disk = next(d for d in result.disks if d.kind == VolumeKind.RBD)
    assert f"hostsnap-{rbd_disk.snapshot_id}" in rbd_snapshots(lab, NAME)
    assert disk_kinds(mixed) == {"vda": "file", "vdb": "network"}
    assert not list(svc.config.rbd_overlay_dir.iterdir())
    assert guest_agent.fsfreeze_status(mixed) == "thawed"


def test_without_the_short_freeze_the_guest_stays_frozen_across_the_rbd_snapshot(
    lab: Lab, mixed: libvirt.virDomain, svc: Services, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(svc, "config", dataclasses.replace(svc.config, rbd_local_overlay=False))
    result = snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED))
    assert {d.target: d.method for d in result.disks} == {
        "vda": "qcow2-overlay",
        "vdb": "rbd-frozen-across",
    }
    job = svc.journal.get(result.job_id)
    direct = job.step("rbd-direct")
    assert direct is not None and "disabled by [agent] rbd_local_overlay" in direct.detail["reason"]
    steps = [s.name for s in job.steps]
    assert steps.index("freeze") < steps.index("rbd-snapshot") < steps.index("thawed")
    assert disk_kinds(mixed) == {"vda": "file", "vdb": "network"}


def disk_kinds(dom: libvirt.virDomain) -> dict[str, str]:
    disks = ET.fromstring(dom.XMLDesc(0)).findall("devices/disk")
    return {d.find("target").get("dev"): d.get("type") for d in disks}  # type: ignore[union-attr]


def test_a_subset_of_disks_can_be_chosen(lab: Lab, mixed: libvirt.virDomain, svc: Services):
    before_rbd = rbd_snapshots(lab, NAME)
    result = snapshot.create(svc, SnapshotRequest(NAME, disks=("vda",)))
    assert [d.target for d in result.disks] == ["vda"]
    assert rbd_snapshots(lab, NAME) == before_rbd


@pytest.mark.parametrize(
    "step", ["during-rbd-snapshot", "after-libvirt-snapshot", "before-merge-back"]
)
def test_a_failure_undoes_every_part_already_made(
    lab: Lab, mixed: libvirt.virDomain, svc: Services, monkeypatch: pytest.MonkeyPatch, step: str
):
    active_before = disk_source(mixed)
    chain_before = chain(active_before)
    rbd_before = rbd_snapshots(lab, NAME)
    pool_before = sorted(p.name for p in lab.paths.pool.glob(f"{NAME}*"))
    monkeypatch.setenv("HOSTSNAP_FAULT", f"fail:{step}")

    with pytest.raises(OperationFailed, match=f"injected failure at step {step}"):
        snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED))

    assert disk_source(mixed) == active_before
    assert chain(active_before) == chain_before
    assert rbd_snapshots(lab, NAME) == rbd_before
    assert sorted(p.name for p in lab.paths.pool.glob(f"{NAME}*")) == pool_before
    assert disk_kinds(mixed) == {"vda": "file", "vdb": "network"}
    assert not list(svc.config.rbd_overlay_dir.iterdir())
    assert guest_agent.fsfreeze_status(mixed) == "thawed"
    job = svc.journal.jobs()[-1]
    assert job.state == "failed" and "injected failure" in (job.error or "")


def test_without_a_guest_agent_preferred_falls_back_and_required_fails(
    lab: Lab, mixed: libvirt.virDomain, svc: Services
):
    # Runs last in this module: the guest agent does not come back.
    kill = "sleep 0.5; kill $(pidof qemu-ga)"
    guest_agent.command(mixed, "guest-exec", path="/bin/sh", arg=["-c", kill])
    deadline = time.monotonic() + 20
    while guest_agent.answers_ping(mixed, timeout=2):
        assert time.monotonic() < deadline, "qemu-ga did not stop"
        time.sleep(0.5)
    rbd_before = rbd_snapshots(lab, NAME)
    active_before = disk_source(mixed)

    with pytest.raises(Unavailable, match="guest agent of lab-mixed did not answer"):
        snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED))
    assert rbd_snapshots(lab, NAME) == rbd_before
    assert disk_source(mixed) == active_before

    result = snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.PREFERRED))
    assert result.consistency == Consistency.CRASH
    assert "could not be frozen" in result.quiesce_note
    assert result.frozen_seconds == 0
