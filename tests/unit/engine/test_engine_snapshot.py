"""Snapshot planning and undo for every disk method, on the fake host over real images: a
qcow2 file overlay, the RBD short freeze (local overlay, merged back), RBD frozen across the
snapshot call, and a domain that is shut off."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from agent import faults
from agent.errors import OperationFailed
from agent.jobs import JobState
from agent.model import Consistency, DomainState, Quiesce, SnapshotRequest
from agent.operations import snapshot
from tests.unit.engine import images
from tests.unit.engine.world import QCOW2, RBD, RBD_IMAGE, World


def steps_of(world: World, job_id: str) -> list[str]:
    svc = world.services()
    return [s.name for s in svc.journal.get(job_id).steps]


def storage(world: World) -> tuple[object, ...]:
    """What a failed job must leave as it found: the pool's files, the RBD snapshots, where
    each domain's disk is live and defined, the overlay directory."""
    overlays = world.config.rbd_overlay_dir
    return (
        sorted(p.name for p in world.pool.iterdir()),
        {spec: world.rbd.names(spec) for spec in world.rbd.images},
        {
            name: (world.host.source(name, "vda"), world.host.source(name, "vda", inactive=True))
            for name in world.host.domains
        },
        sorted(p.name for p in overlays.iterdir()) if overlays.is_dir() else [],
    )


def test_a_running_qcow2_domain_moves_to_a_frozen_overlay_and_keeps_its_data(world: World):
    world.qcow2_domain()
    svc = world.services()
    base = str(world.pool / f"{QCOW2}.qcow2")
    world.host.write(QCOW2, "vda", 1)

    result = snapshot.create(svc, SnapshotRequest(QCOW2, quiesce=Quiesce.REQUIRED))

    (disk,) = result.disks
    assert disk.method == "qcow2-overlay" and disk.content == base
    assert result.consistency == Consistency.APPLICATION
    assert world.host.source(QCOW2, "vda") == f"file:{disk.active_image}"
    assert world.host.source(QCOW2, "vda", inactive=True) == f"file:{disk.active_image}"
    assert images.chain(disk.active_image) == [disk.active_image, base]
    assert not world.host.guest(QCOW2).frozen
    names = steps_of(world, result.job_id)
    assert names.index("freeze") < names.index("switch-active") < names.index("thawed")
    world.host.write(QCOW2, "vda", 2)  # the guest now writes into the overlay only
    assert world.host.reads(QCOW2, "vda", 1) and world.host.reads(QCOW2, "vda", 2)
    assert images.reads(base, 1) and not images.reads(base, 2)
    assert svc.journal.snapshot(disk.snapshot_id) is not None


def test_an_rbd_disk_takes_the_short_freeze_and_is_back_on_its_image_after(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    world.rbd_domain()
    svc = world.services()
    world.host.write(RBD, "vda", 1)
    real_point = faults.point

    def guest_writes_after_thaw(step: faults.Step, domain: str | None = None) -> None:
        real_point(step, domain)
        if step == "before-merge-back":  # thawed, on the local overlay: the write goes there
            assert world.host.source(RBD, "vda").startswith("file:")
            world.host.write(RBD, "vda", 2)

    monkeypatch.setattr(faults, "point", guest_writes_after_thaw)

    result = snapshot.create(svc, SnapshotRequest(RBD, quiesce=Quiesce.REQUIRED))

    (disk,) = result.disks
    assert disk.method == "rbd-short-freeze"
    assert result.consistency == Consistency.APPLICATION
    assert world.host.source(RBD, "vda") == world.host.source(RBD, "vda", inactive=True)
    assert world.host.source(RBD, "vda") == f"rbd:{RBD_IMAGE}"
    assert not list(world.config.rbd_overlay_dir.iterdir())
    assert world.host.reads(RBD, "vda", 1) and world.host.reads(RBD, "vda", 2)
    image = world.rbd.images[RBD_IMAGE]
    (taken,) = image.snapshots.values()
    assert taken[1] == {1: 1}  # the disk at the freeze: without what was written after it
    names = steps_of(world, result.job_id)
    assert names.index("thawed") < names.index("rbd-snapshot") < names.index("merged-back")
    assert not world.host.guest(RBD).frozen
    assert world.host.block_job(RBD, "vda") is None


def test_an_rbd_disk_without_the_local_overlay_is_snapshotted_frozen(world: World):
    world.config = dataclasses.replace(world.config, rbd_local_overlay=False)
    world.rbd_domain()
    svc = world.services()

    result = snapshot.create(svc, SnapshotRequest(RBD, quiesce=Quiesce.REQUIRED))

    (disk,) = result.disks
    assert disk.method == "rbd-frozen-across" and disk.active_image == RBD_IMAGE
    names = steps_of(world, result.job_id)
    assert names.index("rbd-direct") < names.index("plan")
    assert names.index("frozen") < names.index("rbd-snapshot") < names.index("thawed")
    assert not any(c.startswith("snapshot_external") for c in world.host.calls)
    assert world.rbd.names(RBD_IMAGE) == [f"hostsnap-{disk.snapshot_id}"]


def test_a_shut_off_domain_is_snapshotted_by_its_definition(world: World):
    world.qcow2_domain(running=False)
    world.rbd_domain(running=False)
    svc = world.services()
    base = str(world.pool / f"{QCOW2}.qcow2")

    qcow2 = snapshot.create(svc, SnapshotRequest(QCOW2, quiesce=Quiesce.REQUIRED))
    rbd = snapshot.create(svc, SnapshotRequest(RBD, quiesce=Quiesce.REQUIRED))

    (disk,) = qcow2.disks
    assert qcow2.consistency == Consistency.APPLICATION  # shut down cleanly
    assert world.host.source(QCOW2, "vda", inactive=True) == f"file:{disk.active_image}"
    assert images.chain(disk.active_image) == [disk.active_image, base]
    assert world.host.state(QCOW2)[0] == DomainState.SHUTOFF
    assert not any(c.startswith(("snapshot_external", "suspend")) for c in world.host.calls)
    (rbd_disk,) = rbd.disks
    assert rbd_disk.method == "rbd-frozen-across"
    assert world.rbd.names(RBD_IMAGE) == [f"hostsnap-{rbd_disk.snapshot_id}"]


UNDO_CASES = [
    ("qcow2", "after-overlay-created"),
    ("qcow2", "after-freeze"),
    ("qcow2", "after-libvirt-snapshot"),
    ("rbd-short-freeze", "after-overlay-created"),
    ("rbd-short-freeze", "after-libvirt-snapshot"),
    ("rbd-short-freeze", "during-rbd-snapshot"),
    ("rbd-short-freeze", "before-merge-back"),
    ("rbd-short-freeze", "during-merge-back"),
    ("rbd-frozen-across", "during-rbd-snapshot"),
    ("offline-qcow2", "after-overlay-created"),
    ("offline-rbd", "during-rbd-snapshot"),
]


@pytest.mark.parametrize(("method", "step"), UNDO_CASES)
def test_a_failure_at_any_step_undoes_every_part_already_made(
    world: World, monkeypatch: pytest.MonkeyPatch, method: str, step: str
):
    running = not method.startswith("offline")
    if method == "rbd-frozen-across":
        world.config = dataclasses.replace(world.config, rbd_local_overlay=False)
    name = QCOW2 if "qcow2" in method else RBD
    if name == QCOW2:
        world.qcow2_domain(running)
    else:
        world.rbd_domain(running)
    svc = world.services()
    if running:
        world.host.write(name, "vda", 1)
    before = storage(world)
    monkeypatch.setenv("HOSTSNAP_FAULT", f"fail:{step}")

    with pytest.raises(OperationFailed, match=f"injected failure at step {step}"):
        snapshot.create(svc, SnapshotRequest(name, quiesce=Quiesce.REQUIRED))

    assert storage(world) == before
    assert not world.host.guest(name).frozen
    assert world.host.state(name)[0] == (DomainState.RUNNING if running else DomainState.SHUTOFF)
    (job,) = svc.journal.jobs()
    assert job.state == JobState.FAILED and "undo" in [s.name for s in job.steps]
    if running:
        assert world.host.block_job(name, "vda") is None
        assert world.host.reads(name, "vda", 1)
        world.host.write(name, "vda", 2)
        assert world.host.reads(name, "vda", 2)


def test_an_overlay_that_holds_data_is_kept_for_the_operator(world: World, tmp_path: Path):
    """Undo never deletes an overlay the agent made when something wrote into it."""
    world.qcow2_domain(running=False)
    svc = world.services()
    base = str(world.pool / f"{QCOW2}.qcow2")
    written: list[str] = []
    real_point = faults.point

    def someone_writes(step: faults.Step, domain: str | None = None) -> None:
        real_point(step, domain)
        if step == "after-overlay-created":
            (overlay,) = [p for p in os.listdir(world.pool) if ".hostsnap-" in p]
            written.append(str(world.pool / overlay))
            images.write(written[0], 5)
            raise OperationFailed("failed after the overlay was written")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faults, "point", someone_writes)
        with pytest.raises(OperationFailed, match="failed after the overlay"):
            snapshot.create(svc, SnapshotRequest(QCOW2))

    assert os.path.exists(written[0])
    assert world.host.source(QCOW2, "vda", inactive=True) == f"file:{base}"
