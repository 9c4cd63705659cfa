"""Backups of a qcow2 domain's snapshots on the fake host (real qcow2 images, real qemu-nbd)
to an in-memory target, and restores of them into new images: incremental over the last
backup whose layer is still in the chain, BackedUp only once read back equal, and nothing
left on the target by a backup that failed or was refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backups import catalog, diff_stream
from agent.errors import Capacity, Damaged, OperationFailed, Precondition
from agent.model import DiskSnapshot, Quiesce, SnapshotRequest
from agent.operations import backup, delete, restore, restore_in_place, snapshot
from agent.operations.services import Services
from tests.unit.engine import images
from tests.unit.engine.world import QCOW2, TARGET, World


def take(svc: Services) -> DiskSnapshot:
    (disk,) = snapshot.create(svc, SnapshotRequest(QCOW2, quiesce=Quiesce.REQUIRED)).disks
    return disk


def backed_up(svc: Services, taken: DiskSnapshot, full: bool = False) -> catalog.Backup:
    return backup.backup(svc, backup.BackupRequest(taken.snapshot_id, TARGET, full=full)).backup


def restored(svc: Services, world: World, made: catalog.Backup) -> str:
    to = str(world.root / f"restored-{made.id}.qcow2")
    restore.restore(svc, restore.RestoreRequest(made.id, TARGET, to))
    return to


def reads(image: str, markers: set[int]) -> bool:
    return all(images.reads(image, m) == (m in markers) for m in range(1, 5))


def test_a_full_then_an_incremental_backup_each_restore_their_snapshot(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    first = take(svc)
    world.host.write(QCOW2, "vda", 2)
    second = take(svc)
    world.host.write(QCOW2, "vda", 3)

    full, incremental = backed_up(svc, first), backed_up(svc, second)

    assert full.full and incremental.parent == full.id
    assert incremental.data_bytes == images.CLUSTER  # marker 2 only
    assert reads(restored(svc, world, full), {1})
    assert reads(restored(svc, world, incremental), {1, 2})
    assert [b.id for b in catalog.backups(world.target)] == [full.id, incremental.id]
    assert restore.verify(svc, TARGET, incremental.id).backups_read == 2


def test_a_backup_over_a_deleted_snapshot_is_full(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    first = take(svc)
    backed_up(svc, first)
    world.host.write(QCOW2, "vda", 2)
    second = take(svc)
    delete.delete(svc, delete.DeleteRequest(first.snapshot_id))  # its layer merged away

    made = backed_up(svc, second)

    assert made.full
    assert reads(restored(svc, world, made), {1, 2})


def test_a_stream_that_reads_back_different_is_not_a_backup_and_is_removed(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc)
    world.target.damage = True

    with pytest.raises(OperationFailed) as failed:
        backed_up(svc, taken)

    assert failed.value.reason == "BACKUP_VERIFY_FAILED"
    assert world.target.stored == {} and catalog.backups(world.target) == []


def test_an_upload_that_breaks_leaves_nothing(world: World, monkeypatch: pytest.MonkeyPatch):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc)

    def broken(offset: int, data: bytes) -> None:
        raise OSError("Stale file handle")  # the NFS server went away mid-upload

    monkeypatch.setattr(diff_stream.Writer, "data", lambda self, o, d: broken(o, d))
    with pytest.raises(OperationFailed, match="Stale file handle"):
        backed_up(svc, taken)

    assert world.target.stored == {}
    assert "unlock" in world.target.calls


def test_a_target_without_room_is_refused_before_anything_is_sent(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    taken = take(svc)
    world.target.free = images.CLUSTER // 2

    with pytest.raises(Capacity) as refused:
        backed_up(svc, taken)

    assert refused.value.reason == "INSUFFICIENT_CAPACITY"
    assert "Insufficient Capacity" in str(refused.value)
    assert not world.target.stored  # the stream's restic had started: killed before it stored
    assert world.target.calls[-1] == "unlock"  # and the lock it took removed


def test_a_restore_into_an_existing_file_is_refused_and_the_file_kept(world: World):
    world.qcow2_domain()
    svc = world.services()
    made = backed_up(svc, take(svc))
    existing = Path(world.root / "someone.qcow2")
    existing.write_text("theirs")

    with pytest.raises(Exception) as refused:
        restore.restore(svc, restore.RestoreRequest(made.id, TARGET, str(existing)))

    assert getattr(refused.value, "reason", "") == "IMAGE_EXISTS"
    assert existing.read_text() == "theirs"


def test_a_damaged_backup_is_data_loss_and_its_restore_leaves_no_image(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    made = backed_up(svc, take(svc))
    world.target.damage = True
    to = world.root / "restored.qcow2"

    with pytest.raises(Damaged) as damaged:
        restore.restore(svc, restore.RestoreRequest(made.id, TARGET, str(to)))

    assert damaged.value.reason == "BACKUP_DAMAGED" and "not what was verified" in str(
        damaged.value
    )
    assert not to.exists()
    with pytest.raises(Damaged):
        restore.verify(svc, TARGET, made.id)


def in_place(svc: Services, made: catalog.Backup) -> restore.RestoreResult:
    request = restore.RestoreRequest(made.id, TARGET, "", in_place=True)
    return restore_in_place.restore_in_place(svc, request)


def test_a_stopped_domain_restored_in_place_runs_on_the_backup_and_keeps_its_old_image(
    world: World,
):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    made = backed_up(svc, take(svc))
    world.host.write(QCOW2, "vda", 2)  # after the backup's snapshot: gone once restored
    world.host.stop(QCOW2, 10)
    before = world.host.source(QCOW2, "vda", inactive=True).removeprefix("file:")

    result = in_place(svc, made)

    assert result.replaced_image == before and result.kept_snapshot_id == ""
    assert world.host.source(QCOW2, "vda", inactive=True) == f"file:{result.to}"
    assert Path(before).exists()
    world.host.start(QCOW2)
    assert world.host.reads(QCOW2, "vda", 1) and not world.host.reads(QCOW2, "vda", 2)


def test_a_running_domain_is_not_restored_in_place_and_nothing_changes(world: World):
    world.qcow2_domain()
    svc = world.services()
    made = backed_up(svc, take(svc))
    files = sorted(world.pool.iterdir())

    with pytest.raises(Precondition) as refused:
        in_place(svc, made)

    assert refused.value.reason == "DOMAIN_NOT_STOPPED"
    assert sorted(world.pool.iterdir()) == files


def test_a_damaged_backup_restored_in_place_leaves_the_domain_on_its_image(world: World):
    world.qcow2_domain()
    svc = world.services()
    world.host.write(QCOW2, "vda", 1)
    made = backed_up(svc, take(svc))
    world.host.stop(QCOW2, 10)
    files = sorted(world.pool.iterdir())
    world.target.damage = True

    with pytest.raises(Damaged):
        in_place(svc, made)

    assert sorted(world.pool.iterdir()) == files
