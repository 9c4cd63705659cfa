"""Delete, revert, consolidate and flatten on running domains and RBD disks, on the fake
host over real images (test_offline_chain.py has the shut-off domain's chains)."""

from __future__ import annotations

import os

import pytest

from agent.errors import Precondition
from agent.model import DiskSnapshot, DomainState, Quiesce, SnapshotRequest
from agent.operations import consolidate, delete, revert, snapshot
from agent.operations.services import Services
from tests.unit.engine import images
from tests.unit.engine.world import QCOW2, RBD, RBD_IMAGE, World


def take(svc: Services, domain: str) -> DiskSnapshot:
    (disk,) = snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.REQUIRED)).disks
    return disk


def test_a_live_delete_commits_the_active_overlay_and_pivots_to_the_snapshots_layer(
    world: World,
):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 2)

    result = delete.delete(svc, delete.DeleteRequest(taken.snapshot_id, domain=QCOW2))

    assert result.removed == (taken.active_image,) and result.active_image == taken.content
    assert world.host.source(QCOW2, "vda") == f"file:{taken.content}"
    assert world.host.source(QCOW2, "vda", inactive=True) == f"file:{taken.content}"
    assert not os.path.exists(taken.active_image)
    assert any(c.startswith("block_job_pivot") for c in world.host.calls)
    assert world.host.reads(QCOW2, "vda", 1) and world.host.reads(QCOW2, "vda", 2)
    assert svc.journal.snapshot(taken.snapshot_id) is None
    assert world.host.block_job(QCOW2, "vda") is None


def test_deleting_an_rbd_snapshot_removes_it_from_the_image(world: World):
    world.rbd_domain()
    svc = world.services()
    taken = take(svc, RBD)

    delete.delete(svc, delete.DeleteRequest(taken.snapshot_id))

    assert world.rbd.names(RBD_IMAGE) == []
    assert svc.journal.snapshot(taken.snapshot_id) is None


def test_revert_refuses_a_running_domain_and_changes_nothing(world: World):
    world.qcow2_domain()
    svc = world.services()
    taken = take(svc, QCOW2)
    files = sorted(os.listdir(world.pool))

    with pytest.raises(Precondition, match="revert needs it shut off"):
        revert.revert(svc, revert.RevertRequest(taken.snapshot_id))

    assert sorted(os.listdir(world.pool)) == files
    assert world.host.source(QCOW2, "vda") == f"file:{taken.active_image}"


def test_revert_puts_a_fresh_overlay_on_the_snapshots_layer(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 2)

    result = revert.revert(svc, revert.RevertRequest(taken.snapshot_id, stop_domain=True))

    assert world.host.state(QCOW2)[0] == DomainState.SHUTOFF
    assert images.chain(result.active_image) == [result.active_image, taken.content]
    assert os.path.exists(taken.active_image)  # the branch left behind stays until purged
    world.host.start(QCOW2)
    assert world.host.reads(QCOW2, "vda", 1) and not world.host.reads(QCOW2, "vda", 2)


def test_revert_of_an_rbd_disk_rolls_the_image_back(world: World):
    world.rbd_domain()
    svc = world.services()
    world.host.write(RBD, "vda", 1)
    taken = take(svc, RBD)
    world.host.write(RBD, "vda", 2)
    world.host.stop(RBD, 10)

    revert.revert(svc, revert.RevertRequest(taken.snapshot_id))

    world.host.start(RBD)
    assert world.host.reads(RBD, "vda", 1) and not world.host.reads(RBD, "vda", 2)


def layered(world: World) -> tuple[Services, DiskSnapshot, list[str]]:
    """Running on base <- o1 <- o2; the base's snapshot deleted with its merge deferred."""
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    first = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 2)
    kept = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 3)
    delete.delete(svc, delete.DeleteRequest(first.snapshot_id, defer_merge=True))
    return svc, kept, images.chain(kept.active_image)


def test_a_live_consolidation_commits_below_the_active_image_and_flushes_it(world: World):
    svc, kept, chain_before = layered(world)

    result = consolidate.consolidate(svc, consolidate.ChainRequest(QCOW2))

    (disk,) = result.disks
    assert disk.removed == (chain_before[1],) and (disk.depth_before, disk.depth_after) == (3, 2)
    assert images.chain(kept.active_image) == [chain_before[0], chain_before[2]]
    record = svc.journal.snapshot(kept.snapshot_id)
    assert record is not None and record.content == chain_before[2]
    assert images.reads(record.content, 2) and not images.reads(record.content, 3)
    steps = [s.name for s in svc.journal.get(result.job_id).steps]
    assert steps.count("paused") == steps.count("resumed") == 1  # the flush
    assert world.host.state(QCOW2)[0] == DomainState.RUNNING
    assert all(world.host.reads(QCOW2, "vda", m) for m in (1, 2, 3))


def test_a_live_flatten_is_refused_while_it_would_lose_snapshots_unless_forced(world: World):
    svc, kept, chain_before = layered(world)

    with pytest.raises(Precondition, match=kept.snapshot_id):
        consolidate.flatten(svc, consolidate.ChainRequest(QCOW2))
    assert images.chain(chain_before[0]) == chain_before

    result = consolidate.flatten(svc, consolidate.ChainRequest(QCOW2, force=True))

    (disk,) = result.disks
    assert disk.snapshots_lost == (kept.snapshot_id,)
    assert images.chain(chain_before[0]) == [chain_before[0]]
    assert not any(os.path.exists(p) for p in chain_before[1:])
    assert all(world.host.reads(QCOW2, "vda", m) for m in (1, 2, 3))
    assert world.host.state(QCOW2)[0] == DomainState.RUNNING


def test_an_rbd_clone_is_flattened_and_consolidation_has_nothing_to_merge(world: World):
    parent = world.rbd.add("rbd/template")
    parent.data[4] = 4
    parent.snapshots["base"] = (1, {4: 4})
    world.rbd_domain()
    world.rbd.images[RBD_IMAGE].parent = "rbd/template@base"
    svc = world.services()

    merged = consolidate.consolidate(svc, consolidate.ChainRequest(RBD))
    flattened = consolidate.flatten(svc, consolidate.ChainRequest(RBD))

    assert merged.disks[0].removed == () and "nothing to merge" in merged.disks[0].note
    (disk,) = flattened.disks
    assert (disk.depth_before, disk.depth_after) == (2, 1)
    assert world.rbd.images[RBD_IMAGE].parent is None
    assert world.host.reads(RBD, "vda", 4)
