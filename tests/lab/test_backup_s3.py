"""Backups to an S3 target: Ceph's own radosgw, started by the lab on its cluster. Both lab
guests (their writers running) backed up full then incrementally, each backup restored into a
fresh pool or a new file and found identical to its snapshot; a user quota the gateway
enforces fails the backup with nothing left on the target."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backups import catalog, targets
from agent.config import AgentConfig
from agent.errors import Capacity
from agent.model import DiskSnapshot, Quiesce, SnapshotRequest
from agent.operations import backup, delete, restore, snapshot
from agent.operations.services import Services
from agent.wiring import open_services, repository
from hostsnap_lab import rgw
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN

TARGET = "lab-s3"
TAKEN: list[str] = []  # the snapshots a test took, deleted after it


def admin(lab: Lab, *args: str) -> None:
    argv = ["radosgw-admin", "-c", str(lab.ceph_conf), "-n", rgw.NAME, *args]
    subprocess.run(argv, capture_output=True, check=True, timeout=120)


@pytest.fixture
def svc(lab: Lab, agent_config: AgentConfig, tmp_path: Path) -> Iterator[Services]:
    rgw.ensure_running(lab.paths)
    config = dataclasses.replace(agent_config, backup_targets_dir=tmp_path / "targets")
    bucket = f"hostsnap-{uuid.uuid4().hex[:8]}"
    added = targets.add(
        config.backup_targets_dir,
        TARGET,
        f"s3:{rgw.URL}/{bucket}",
        credentials=str(rgw.credentials_file(lab.paths)),
    )
    repository(config, added).init()
    services = open_services(config)
    yield services
    while TAKEN:
        delete.delete(services, delete.DeleteRequest(TAKEN.pop()))
    services.close()
    rgw.set_quota(lab.paths, -1)
    admin(lab, "bucket", "rm", f"--bucket={bucket}", "--purge-objects")


def take(svc: Services, domain: str) -> DiskSnapshot:
    (disk,) = snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.PREFERRED)).disks
    TAKEN.append(disk.snapshot_id)
    return disk


def backed_up(svc: Services, taken: DiskSnapshot) -> catalog.Backup:
    return backup.backup(svc, backup.BackupRequest(taken.snapshot_id, TARGET)).backup


def identical(first: str, second: str) -> bool:
    done = subprocess.run(
        ["qemu-img", "compare", "-U", first, second], capture_output=True, text=True, timeout=300
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.fixture
def fresh_pool(lab: Lab) -> Iterator[str]:
    pool = f"restored-{uuid.uuid4().hex[:6]}"
    ceph = ["ceph", "-c", str(lab.ceph_conf)]
    subprocess.run([*ceph, "osd", "pool", "create", pool, "8"], check=True, capture_output=True)
    subprocess.run(
        [*ceph, "osd", "pool", "application", "enable", pool, "rbd"],
        check=True,
        capture_output=True,
    )
    yield pool
    subprocess.run(
        [*ceph, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"],
        capture_output=True,
    )


def test_an_rbd_guest_backed_up_to_s3_restores_each_backup_into_a_fresh_pool(
    lab: Lab, svc: Services, fresh_pool: str
):
    taken = [take(svc, RBD_DOMAIN) for _ in range(3)]
    made = [backed_up(svc, t) for t in taken]

    assert made[0].full and [b.parent for b in made[1:]] == [b.id for b in made[:-1]]
    for n, (snap, copy) in enumerate(zip(taken, made, strict=True)):
        image = f"{fresh_pool}/restored-{n}"
        restore.restore(svc, restore.RestoreRequest(copy.id, TARGET, image))
        as_taken = f"rbd:rbd/{RBD_DOMAIN}@hostsnap-{snap.snapshot_id}:conf={lab.ceph_conf}"
        assert identical(as_taken, f"rbd:{image}:conf={lab.ceph_conf}"), copy.id


def test_a_qcow2_guest_backed_up_to_s3_restores_each_backup(svc: Services, tmp_path: Path):
    taken = [take(svc, QCOW2_DOMAIN) for _ in range(2)]
    made = [backed_up(svc, t) for t in taken]

    assert made[1].parent == made[0].id and made[1].data_bytes < made[0].data_bytes
    for snap, copy in zip(taken, made, strict=True):
        to = str(tmp_path / f"{copy.id}.qcow2")
        restore.restore(svc, restore.RestoreRequest(copy.id, TARGET, to))
        record = svc.journal.snapshot(snap.snapshot_id)
        assert record is not None and identical(record.content, to)
    assert restore.verify(svc, TARGET, made[1].id).backups_read == 2


def test_a_bucket_over_its_quota_fails_the_backup_and_keeps_nothing(lab: Lab, svc: Services):
    taken = take(svc, RBD_DOMAIN)
    rgw.set_quota(lab.paths, 32 * 1024)  # the full stream, compressed, is about 100 KiB

    with pytest.raises(Capacity) as refused:
        backed_up(svc, taken)

    assert refused.value.reason == "INSUFFICIENT_CAPACITY"
    rgw.set_quota(lab.paths, -1)
    store = svc.repository(targets.load(svc.config.backup_targets_dir, TARGET))
    assert catalog.backups(store) == [] and store.snapshots() == []
