"""A shut-off domain's qcow2 chain with the real qemu-img, through the fake host: snapshots,
delete (merged at once, or deferred and merged by consolidation) and the agent killed after
a merge, each kept snapshot still reading what the guest had written when it was taken."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from agent.errors import Precondition
from agent.jobs import JobState
from agent.model import Quiesce, SnapshotRequest
from agent.operations import consolidate, delete, snapshot, volumes
from agent.operations.services import Services
from tests.unit.engine import images
from tests.unit.engine.world import QCOW2, World


def _active(world: World) -> str:
    where = world.host.source(QCOW2, "vda", inactive=True)
    assert where.startswith("file:"), where
    return where.removeprefix("file:")


def _write(world: World, marker: int) -> None:
    """The guest wrote `marker` before it was shut down (into the chain's top)."""
    images.write(_active(world), marker)


def _chain(world: World) -> list[str]:
    return images.chain(_active(world))


def _take(svc: Services) -> tuple[str, str]:
    """An offline snapshot: (its id, its content image)."""
    result = snapshot.create(svc, SnapshotRequest(QCOW2, quiesce=Quiesce.REQUIRED))
    (disk,) = result.disks
    assert disk.method == "qcow2-overlay"
    return disk.snapshot_id, disk.content


def _content(svc: Services, snapshot_id: str) -> str:
    record = svc.journal.snapshot(snapshot_id)
    assert record is not None
    return record.content


def _reads(image: str, markers: set[int]) -> bool:
    """The image (with its chain) reads exactly `markers` of 1..4."""
    return all(images.reads(image, m) == (m in markers) for m in range(1, 5))


def _three_snapshots(world: World) -> tuple[Services, list[str], str]:
    """Markers 1..4, a snapshot after each of the first three: (svc, ids, the original)."""
    world.qcow2_domain(running=False)
    original = _active(world)
    svc = world.services()
    ids = []
    for marker in (1, 2, 3):
        _write(world, marker)
        ids.append(_take(svc)[0])
    _write(world, 4)
    assert len(_chain(world)) == 4
    return svc, ids, original


def _definition_has_no_stale_chain(world: World) -> None:
    # The definition names the top alone: libvirt reads the chain from the images.
    assert "<backingStore" not in world.host.xml(QCOW2, inactive=True)


def test_offline_snapshots_then_delete_merges_the_layer_above_and_keeps_every_snapshot(
    world: World,
) -> None:
    svc, (s1, s2, s3), original = _three_snapshots(world)
    before = {s: _content(svc, s) for s in (s1, s2, s3)}

    removed = delete.delete(svc, delete.DeleteRequest(s2, domain=QCOW2))

    (top,) = removed.removed
    assert top == before[s3]  # the layer above s2's, merged into it
    assert not os.path.exists(top)
    assert len(_chain(world)) == 3 and top not in _chain(world)
    assert _chain(world)[-1] == original
    assert _reads(_active(world), {1, 2, 3, 4})
    assert _reads(_content(svc, s1), {1})
    # s3's layer was merged into s2's: s3 now is that layer, reading as before.
    assert _content(svc, s1) == before[s1]
    assert _content(svc, s3) == before[s2]
    assert _reads(_content(svc, s3), {1, 2, 3})
    assert svc.journal.snapshot(s2) is None
    _definition_has_no_stale_chain(world)


def test_deferred_deletes_are_merged_by_one_consolidation(world: World) -> None:
    svc, (s1, s2, s3), original = _three_snapshots(world)
    for sid in (s2, s3):
        done = delete.delete(svc, delete.DeleteRequest(sid, domain=QCOW2, defer_merge=True))
        assert done.removed == ()
    assert len(_chain(world)) == 4  # nothing merged yet

    result = consolidate.consolidate(svc, consolidate.ChainRequest(QCOW2))

    (disk,) = result.disks
    assert disk.depth_after < disk.depth_before
    assert all(not os.path.exists(p) for p in disk.removed)
    assert _chain(world)[-1] == original
    assert len(_chain(world)) == disk.depth_after
    assert _reads(_active(world), {1, 2, 3, 4})
    assert _reads(_content(svc, s1), {1})
    _definition_has_no_stale_chain(world)


def test_agent_killed_after_an_offline_delete_merge_is_finished_by_recovery(
    world: World,
) -> None:
    _, (s1, s2, _), _ = _three_snapshots(world)
    killed = world.killed_at(
        "after-merge", lambda svc: delete.delete(svc, delete.DeleteRequest(s2, domain=QCOW2))
    )
    assert not killed.outcome  # the operation never returned

    restarted, outcomes = world.restarted()

    (job,) = outcomes
    assert job.state == JobState.SUCCEEDED, job.detail
    assert restarted.journal.get(job.job_id).state == JobState.SUCCEEDED
    assert len(_chain(world)) == 3
    assert all(os.path.exists(p) for p in _chain(world))
    assert _reads(_active(world), {1, 2, 3, 4})
    assert _reads(_content(restarted, s1), {1})
    assert restarted.journal.snapshot(s2) is None
    _definition_has_no_stale_chain(world)


def test_a_finished_offline_merge_is_not_run_again_over_what_the_domain_wrote_since(
    world: World,
) -> None:
    # The newest snapshot's delete merges the active image into the layer below: once that
    # commit finished, the domain boots on that layer and writes over marker 4's place. A
    # recovery that committed the old active image again would put the old marker 4 back.
    _, (_, _, s3), _ = _three_snapshots(world)
    merged_into = _content(world.services(), s3)
    killed = world.killed_at(
        "after-merge", lambda svc: delete.delete(svc, delete.DeleteRequest(s3, domain=QCOW2))
    )
    assert not killed.outcome
    assert _active(world) == merged_into  # the commit finished: the domain is on its base
    images.write(merged_into, 4, value=9)  # the domain ran and wrote; it is shut off again

    restarted, outcomes = world.restarted()

    (job,) = outcomes
    assert job.state == JobState.SUCCEEDED, job.detail
    assert images.reads(_active(world), 4, value=9)
    assert _reads(_active(world), {1, 2, 3})
    assert restarted.journal.snapshot(s3) is None


def test_agent_killed_after_a_consolidation_merge_ends_it_failed_with_the_merge_kept(
    world: World,
) -> None:
    svc, (s1, s2, s3), original = _three_snapshots(world)
    for sid in (s2, s3):
        delete.delete(svc, delete.DeleteRequest(sid, domain=QCOW2, defer_merge=True))
    killed = world.killed_at(
        "after-merge", lambda svc: consolidate.consolidate(svc, consolidate.ChainRequest(QCOW2))
    )
    assert not killed.outcome

    restarted, outcomes = world.restarted()

    (job,) = outcomes
    assert job.state == JobState.FAILED and "was finished" in job.detail, job.detail
    record = restarted.journal.get(job.job_id)
    assert "interrupted by an agent restart" in (record.error or "")
    chain = _chain(world)
    assert len(chain) < 4 and chain[-1] == original
    assert all(os.path.exists(p) for p in chain)
    assert _reads(_active(world), {1, 2, 3, 4})
    assert _reads(_content(restarted, s1), {1})
    _definition_has_no_stale_chain(world)


def test_a_forced_offline_flatten_leaves_one_image_and_forgets_the_lost_snapshots(
    world: World,
) -> None:
    svc, ids, original = _three_snapshots(world)
    active = _active(world)

    result = consolidate.flatten(svc, consolidate.ChainRequest(QCOW2, force=True))

    (disk,) = result.disks
    assert (disk.depth_before, disk.depth_after) == (4, 1)
    assert set(disk.snapshots_lost) == set(ids)
    assert original in disk.removed
    assert all(not os.path.exists(p) for p in disk.removed)
    assert _chain(world) == [active]
    assert _reads(active, {1, 2, 3, 4})
    assert all(svc.journal.snapshot(s) is None for s in ids)
    _definition_has_no_stale_chain(world)


def test_agent_killed_after_an_offline_flatten_ends_it_failed_with_the_flatten_finished(
    world: World,
) -> None:
    _, ids, original = _three_snapshots(world)
    active = _active(world)
    killed = world.killed_at(
        "after-merge",
        lambda svc: consolidate.flatten(svc, consolidate.ChainRequest(QCOW2, force=True)),
    )
    assert not killed.outcome
    assert os.path.exists(original)  # the dead agent had not removed the layers yet

    restarted, outcomes = world.restarted()

    (job,) = outcomes
    assert job.state == JobState.FAILED and "was finished" in job.detail, job.detail
    assert not os.path.exists(original)
    assert _chain(world) == [active]
    assert _reads(active, {1, 2, 3, 4})
    assert all(restarted.journal.snapshot(s) is None for s in ids)
    _definition_has_no_stale_chain(world)


def test_a_disk_detached_while_a_job_ran_is_disk_gone_when_its_chain_is_checked(
    world: World,
) -> None:
    world.qcow2_domain(running=False)
    svc = world.services()
    (volume,) = volumes.domain_volumes(svc, QCOW2)
    assert volume.path is not None
    root = ET.fromstring(world.host.xml(QCOW2, inactive=True))
    devices = root.find("devices")
    assert devices is not None
    for disk in devices.findall("disk"):
        devices.remove(disk)  # an admin's `virsh detach-disk --config` meanwhile
    world.host.define(ET.tostring(root, encoding="unicode"))

    with pytest.raises(Precondition) as gone:
        consolidate._verified_chain(svc, volume, [volume.path])

    assert gone.value.reason == "DISK_GONE" and volume.target in str(gone.value)
