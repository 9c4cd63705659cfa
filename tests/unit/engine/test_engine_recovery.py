"""Recovery from every fault step (agent/faults.py STEPS) on the fake host: the agent dies at
the step (world.killed_at: nothing of it runs after), a new agent process over the same
journal and host runs start-up recovery, and the outcome is what tests/lab/test_recovery.py
asserts in the lab: the job's state truthful, the guest thawed and running, the disks where
they should be, no overlay or block job left, the data the guest wrote readable.

SCENARIOS names at least one case per step: a new fault step without a fast test fails
test_recovery_from_every_fault_step (its MISSING case)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from agent import faults
from agent.backups import catalog
from agent.jobs import JobState
from agent.model import (
    DiskSnapshot,
    DomainState,
    ImageSnapshotRequest,
    Quiesce,
    SnapshotRequest,
)
from agent.operations import (
    backup,
    consolidate,
    delete,
    group,
    image_snapshot,
    restore,
    restore_in_place,
    revert,
    snapshot,
)
from agent.operations.recovery import Recovered
from agent.operations.services import Services
from tests.unit.engine import images
from tests.unit.engine.world import QCOW2, RBD, RBD_IMAGE, TARGET, World


def storage(world: World) -> tuple[object, ...]:
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


def only(outcomes: list[Recovered], operation: str) -> Recovered:
    (found,) = [o for o in outcomes if o.operation == operation]
    return found


def take(svc: Services, domain: str) -> DiskSnapshot:
    (disk,) = snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.REQUIRED)).disks
    return disk


def snapshot_killed(
    world: World, domain: str, step: str, writes: int | None = None
) -> tuple[Services, Recovered]:
    """A snapshot of `domain` whose agent dies at `step` (the guest writing marker `writes`
    there, when given), then the restarted agent's recovery of it."""
    world.host.write(domain, "vda", 1)
    at_step = (lambda: world.host.write(domain, "vda", writes)) if writes else (lambda: None)
    killed = world.killed_at(
        step,
        lambda svc: snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.REQUIRED)),
        at_step,
    )
    assert not killed.outcome  # the dead agent's call never returned
    svc, outcomes = world.restarted()
    return svc, only(outcomes, "snapshot")


def assert_guest_runs_thawed(world: World, domain: str, *markers: int) -> None:
    assert world.host.state(domain)[0] == DomainState.RUNNING
    assert not world.host.guest(domain).frozen
    assert world.host.block_job(domain, "vda") is None
    for marker in markers:
        assert world.host.reads(domain, "vda", marker), marker
    world.host.write(domain, "vda", 9)  # the guest writes on
    assert world.host.reads(domain, "vda", 9)


def assert_on_rbd(world: World) -> None:
    assert world.host.source(RBD, "vda") == f"rbd:{RBD_IMAGE}"
    assert world.host.source(RBD, "vda", inactive=True) == f"rbd:{RBD_IMAGE}"
    assert not list(world.config.rbd_overlay_dir.glob("*"))


def assert_failed_by_restart(svc: Services, job: Recovered) -> None:
    assert job.state == JobState.FAILED, job.detail
    record = svc.journal.get(job.job_id)
    assert record.state == JobState.FAILED
    assert "interrupted by an agent restart" in (record.error or "")


# -- snapshot


def qcow2_snapshot_undone(world: World, step: str) -> None:
    world.qcow2_domain()
    before = storage(world)
    svc, job = snapshot_killed(world, QCOW2, step)
    assert_failed_by_restart(svc, job)
    assert storage(world) == before
    assert_guest_runs_thawed(world, QCOW2, 1)
    assert svc.journal.snapshots(QCOW2) == []


def qcow2_snapshot_completed(world: World, step: str) -> None:
    world.qcow2_domain()
    svc, job = snapshot_killed(world, QCOW2, step)
    assert world.host.guest(QCOW2).frozen is False  # thawed by recovery
    assert job.state == JobState.SUCCEEDED, job.detail
    record = svc.journal.get(job.job_id)
    assert record.result is not None
    (made,) = record.result["disks"]
    assert svc.journal.snapshot(made["snapshot_id"]) is not None
    assert world.host.source(QCOW2, "vda") == f"file:{made['active_image']}"
    assert images.chain(made["active_image"])[1] == made["content"]
    assert_guest_runs_thawed(world, QCOW2, 1)


def rbd_snapshot_undone(world: World, step: str) -> None:
    world.rbd_domain()
    before = storage(world)
    svc, job = snapshot_killed(world, RBD, step)
    assert_failed_by_restart(svc, job)
    assert storage(world) == before
    assert_on_rbd(world)
    assert_guest_runs_thawed(world, RBD, 1)


def rbd_snapshot_completed(world: World, step: str, *, writes: int | None = 2) -> None:
    """The short freeze killed after its switch: what the guest wrote into the local overlay
    meanwhile (`writes`) is merged back into the image by recovery."""
    world.rbd_domain()
    svc, job = snapshot_killed(world, RBD, step, writes)
    if step == "during-merge-back":
        assert world.host.block_job(RBD, "vda") is None  # recovery finished QEMU's commit
    assert job.state == JobState.SUCCEEDED, job.detail
    record = svc.journal.get(job.job_id)
    assert record.result is not None
    (made,) = record.result["disks"]
    assert made["method"] == "rbd-short-freeze"
    assert world.rbd.names(RBD_IMAGE) == [f"hostsnap-{made['snapshot_id']}"]
    assert_on_rbd(world)
    assert_guest_runs_thawed(world, RBD, 1, *([writes] if writes else []))


def rbd_frozen_across_completed(world: World, step: str) -> None:
    world.config = replace(world.config, rbd_local_overlay=False)
    world.rbd_domain()
    svc, job = snapshot_killed(world, RBD, step)
    assert job.state == JobState.SUCCEEDED, job.detail
    assert "frozen until the agent restarted" in str(svc.journal.get(job.job_id).result)
    assert_on_rbd(world)
    assert_guest_runs_thawed(world, RBD, 1)


def image_snapshot_undone(world: World, step: str) -> None:
    """RBD images without a domain: the first snapshot made, then the agent dies."""
    specs = ("rbd/stopped-a", "rbd/stopped-b")
    for spec in specs:
        world.rbd.add(spec)
    world.killed_at(step, lambda svc: image_snapshot.create(svc, ImageSnapshotRequest(specs)))
    assert world.rbd.names(specs[0]) != []
    svc, outcomes = world.restarted()
    assert_failed_by_restart(svc, only(outcomes, "snapshot"))
    assert [world.rbd.names(spec) for spec in specs] == [[], []]


def group_member_undone(world: World, step: str) -> None:
    """A consistency group member's snapshot under its group's hold: the agent dies after
    the member's switch, with the guest held frozen."""
    world.qcow2_domain()
    world.host.write(QCOW2, "vda", 1)
    before = storage(world)

    def member(svc: Services) -> object:
        group.freeze(svc, QCOW2, "group-1", 20.0)
        return snapshot.create(svc, SnapshotRequest(QCOW2, group_id="group-1"))

    world.killed_at(step, member, domain=QCOW2)
    assert world.host.guest(QCOW2).frozen

    svc, outcomes = world.restarted()

    member_job, hold = only(outcomes, "snapshot"), only(outcomes, group.OPERATION)
    assert_failed_by_restart(svc, member_job)
    assert "taken back" in member_job.detail
    assert_failed_by_restart(svc, hold)
    assert storage(world) == before
    assert_guest_runs_thawed(world, QCOW2, 1)


# -- revert


def stopped_after_a_snapshot(world: World, domain: str) -> DiskSnapshot:
    svc = world.services()
    world.host.write(domain, "vda", 1)
    taken = take(svc, domain)
    world.host.write(domain, "vda", 2)  # after the revert point
    world.host.stop(domain, 10)
    return taken


def qcow2_revert_undone(world: World, step: str) -> None:
    world.qcow2_domain()
    taken = stopped_after_a_snapshot(world, QCOW2)
    before = storage(world)
    request = revert.RevertRequest(taken.snapshot_id)
    world.killed_at(step, lambda svc: revert.revert(svc, request))
    svc, outcomes = world.restarted()
    assert_failed_by_restart(svc, only(outcomes, revert.OPERATION))
    assert storage(world) == before
    world.host.start(QCOW2)
    assert world.host.reads(QCOW2, "vda", 1) and world.host.reads(QCOW2, "vda", 2)


def rbd_revert_completed(world: World, step: str) -> None:
    world.rbd_domain()
    taken = stopped_after_a_snapshot(world, RBD)
    request = revert.RevertRequest(taken.snapshot_id)
    world.killed_at(step, lambda svc: revert.revert(svc, request))
    _, outcomes = world.restarted()
    job = only(outcomes, revert.OPERATION)
    assert job.state == JobState.SUCCEEDED, job.detail
    world.host.start(RBD)
    assert world.host.reads(RBD, "vda", 1) and not world.host.reads(RBD, "vda", 2)


# -- delete, consolidate, flatten on a running domain


def delete_killed(world: World, step: str, stopped_before_restart: bool = False) -> None:
    """A live delete: the snapshot's layer is the base of the active overlay (an active
    commit and pivot). Killed after the pivot, the guest writes into the base: recovery never
    writes the old top back over it."""
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 2)
    after_pivot = step == "after-merge"
    at_step = (lambda: world.host.write(QCOW2, "vda", 3)) if after_pivot else (lambda: None)
    request = delete.DeleteRequest(taken.snapshot_id)
    world.killed_at(step, lambda svc: delete.delete(svc, request), at_step)
    if after_pivot:
        assert world.host.source(QCOW2, "vda") == f"file:{taken.content}"
    else:
        assert world.host.block_job(QCOW2, "vda") is not None  # QEMU goes on with it
    if stopped_before_restart:
        world.host.stop(QCOW2, 10)

    svc, outcomes = world.restarted()

    job = only(outcomes, delete.OPERATION)
    assert job.state == JobState.SUCCEEDED, job.detail
    assert not os.path.exists(taken.active_image)
    assert svc.journal.snapshot(taken.snapshot_id) is None
    if stopped_before_restart:
        world.host.start(QCOW2)
    assert world.host.source(QCOW2, "vda") == f"file:{taken.content}"
    assert_guest_runs_thawed(world, QCOW2, 1, 2, *([3] if after_pivot else []))


def layered(world: World) -> tuple[Services, DiskSnapshot, list[str]]:
    """A running domain on base <- o1 <- o2 whose base holds no snapshot any more (deleted,
    its merge deferred): consolidation commits o1 into the base below the active o2."""
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    first = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 2)
    kept = take(svc, QCOW2)
    world.host.write(QCOW2, "vda", 3)
    delete.delete(svc, delete.DeleteRequest(first.snapshot_id, defer_merge=True))
    return svc, kept, images.chain(kept.active_image)


def consolidate_killed(world: World, step: str) -> None:
    svc, kept, chain_before = layered(world)
    request = consolidate.ChainRequest(QCOW2, ("vda",), bandwidth_mib=4)
    world.killed_at(step, lambda svc: consolidate.consolidate(svc, request))
    if step == "during-block-commit":
        assert world.host.block_job(QCOW2, "vda") is not None  # QEMU goes on with it

    svc, outcomes = world.restarted()

    job = only(outcomes, consolidate.CONSOLIDATE)
    assert_failed_by_restart(svc, job)
    assert "was finished" in job.detail
    after = images.chain(kept.active_image)
    assert len(after) == len(chain_before) - 1 and after[0] == chain_before[0]
    assert not os.path.exists(chain_before[1])
    record = svc.journal.snapshot(kept.snapshot_id)
    assert record is not None and record.content == after[1]
    assert images.reads(record.content, 1) and images.reads(record.content, 2)
    assert not images.reads(record.content, 3)  # the kept snapshot reads as it was taken
    assert_guest_runs_thawed(world, QCOW2, 1, 2, 3)


def flatten_killed(world: World, step: str) -> None:
    """Killed while the domain is paused for the flush of the pulled data: recovery resumes
    the guest, flushes again and removes the layers."""
    svc, kept, chain_before = layered(world)
    delete.delete(svc, delete.DeleteRequest(kept.snapshot_id, defer_merge=True))
    request = consolidate.ChainRequest(QCOW2, ("vda",))
    world.killed_at(step, lambda svc: consolidate.flatten(svc, request))
    assert world.host.state(QCOW2)[0] == DomainState.PAUSED

    svc, outcomes = world.restarted()

    job = only(outcomes, consolidate.FLATTEN)
    assert_failed_by_restart(svc, job)
    assert "was finished" in job.detail
    steps = svc.journal.get(job.job_id).steps
    assert any(s.name == "resumed" and s.detail.get("by") == "recovery" for s in steps)
    assert [s.name for s in steps].count("paused") == 2  # the dead agent's, recovery's flush
    assert images.chain(chain_before[0]) == [chain_before[0]]
    assert not any(os.path.exists(p) for p in chain_before[1:])
    assert_guest_runs_thawed(world, QCOW2, 1, 2, 3)


# -- backup


def backup_removed(world: World, step: str) -> None:
    """A backup whose agent dies mid-upload or before the read-back: the restarted agent
    fails it and removes what it left on the target."""
    world.qcow2_domain()
    world.host.write(QCOW2, "vda", 1)
    svc = world.services()
    taken = take(svc, QCOW2)
    request = backup.BackupRequest(taken.snapshot_id, TARGET)
    world.killed_at(step, lambda svc: backup.backup(svc, request))

    svc, outcomes = world.restarted()

    assert_failed_by_restart(svc, only(outcomes, backup.OPERATION))
    assert world.target.stored == {} and catalog.backups(world.target) == []
    assert svc.journal.snapshot(taken.snapshot_id) is not None  # the snapshot stays


def restore_killed(world: World, step: str) -> None:
    """A restore whose agent dies while writing the staged image (removed: FAILED) or once it
    is whole (it takes its name: SUCCEEDED); a file already called `to` is never touched."""
    world.qcow2_domain()
    world.host.write(QCOW2, "vda", 1)
    svc = world.services()
    made = backup.backup(svc, backup.BackupRequest(take(svc, QCOW2).snapshot_id, TARGET))
    to = world.root / "restored.qcow2"
    request = restore.RestoreRequest(made.backup.id, TARGET, str(to))
    world.killed_at(step, lambda svc: restore.restore(svc, request))

    svc, outcomes = world.restarted()

    (outcome,) = [o for o in outcomes if svc.journal.get(o.job_id).operation == restore.OPERATION]
    assert list(world.root.glob("restored.qcow2.hostsnap-restore-*")) == []
    if step == "during-restore":
        assert_failed_by_restart(svc, outcome)
        assert not to.exists()
    else:
        assert outcome.state == JobState.SUCCEEDED
        assert images.reads(str(to), 1)


def in_place_restore_killed(world: World, step: str) -> None:
    """A restore in place whose agent dies while writing the new image (removed, the domain
    still on its image: FAILED) or once it is whole (the domain is pointed at it: SUCCEEDED)."""
    world.qcow2_domain()
    world.host.write(QCOW2, "vda", 1)
    svc = world.services()
    made = backup.backup(svc, backup.BackupRequest(take(svc, QCOW2).snapshot_id, TARGET))
    world.host.write(QCOW2, "vda", 2)
    world.host.stop(QCOW2, 10)
    before = storage(world)
    request = restore.RestoreRequest(made.backup.id, TARGET, "", in_place=True)
    world.killed_at(step, lambda svc: restore_in_place.restore_in_place(svc, request))

    svc, outcomes = world.restarted()

    outcome = only(outcomes, restore_in_place.OPERATION)
    if step == "during-restore":
        assert_failed_by_restart(svc, outcome)
        assert storage(world) == before
    else:
        assert outcome.state == JobState.SUCCEEDED, outcome.detail
    world.host.start(QCOW2)
    assert world.host.reads(QCOW2, "vda", 1)
    assert world.host.reads(QCOW2, "vda", 2) == (step == "during-restore")


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[World, str], None]


SCENARIOS: dict[str, list[Case]] = {
    "after-overlay-created": [
        Case("qcow2", qcow2_snapshot_undone),
        Case("rbd-short-freeze", rbd_snapshot_undone),
    ],
    "after-freeze": [
        Case("qcow2", qcow2_snapshot_undone),
        Case("rbd-short-freeze", rbd_snapshot_undone),
    ],
    "during-rbd-snapshot": [
        Case("rbd-short-freeze", rbd_snapshot_completed),
        Case("rbd-frozen-across", rbd_frozen_across_completed),
        Case("rbd-images", image_snapshot_undone),
    ],
    "after-libvirt-snapshot": [
        Case("qcow2", qcow2_snapshot_completed),
        Case("rbd-short-freeze", rbd_snapshot_undone),
    ],
    "before-merge-back": [Case("rbd-short-freeze", rbd_snapshot_completed)],
    "during-merge-back": [Case("rbd-short-freeze", rbd_snapshot_completed)],
    "after-merge-back-pivot": [
        Case("rbd-short-freeze", lambda w, s: rbd_snapshot_completed(w, s, writes=None))
    ],
    "during-revert": [
        Case("qcow2", qcow2_revert_undone),
        Case("rbd", rbd_revert_completed),
    ],
    "during-block-commit": [
        Case("delete-active-commit", delete_killed),
        Case("consolidate", consolidate_killed),
    ],
    "after-merge": [
        Case("delete-running", delete_killed),
        Case("delete-stopped-before-restart", lambda w, s: delete_killed(w, s, True)),
        Case("consolidate", consolidate_killed),
    ],
    "while-paused": [Case("flatten", flatten_killed)],
    "group-snapshot": [Case("qcow2-member", group_member_undone)],
    "during-backup-upload": [Case("qcow2", backup_removed)],
    "after-backup-upload": [Case("qcow2", backup_removed)],
    "during-restore": [
        Case("qcow2", restore_killed),
        Case("qcow2-in-place", in_place_restore_killed),
    ],
    "before-restore-publish": [
        Case("qcow2", restore_killed),
        Case("qcow2-in-place", in_place_restore_killed),
    ],
}


def _missing(world: World, step: str) -> None:
    pytest.fail(f"fault step {step} has no fast recovery test: add a case to SCENARIOS")


CASES = [
    pytest.param(step, case, id=f"{step}-{case.name}")
    for step in faults.STEPS
    for case in SCENARIOS.get(step) or [Case("MISSING", _missing)]
]


@pytest.mark.parametrize(("step", "case"), CASES)
def test_recovery_from_every_fault_step(world: World, step: str, case: Case):
    case.run(world, step)


def test_every_scenario_names_a_fault_step():
    assert set(SCENARIOS) <= set(faults.STEPS)
