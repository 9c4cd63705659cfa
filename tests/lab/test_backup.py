"""Backups on the lab: snapshots of lab-rbd (Ceph) and lab-qcow2 (a qcow2 chain) backed up
to a restic repository in a directory with real restic, restored into new images that
`qemu-img compare` finds identical to the snapshot, the stream Ceph's own `rbd import-diff`
reads, an agent killed mid-backup leaving nothing on the target, and a target that fills up
mid-upload failing the backup (never BackedUp).

The directory target stands for an NFS mount of secondary storage: this machine's kernel has
no NFS server (no nfsd in /proc/filesystems), so no real export can be mounted here."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from agent.admission import AdmissionConfig
from agent.backups import catalog, targets
from agent.config import AgentConfig
from agent.errors import Capacity, Damaged, Precondition
from agent.hypervisor import domain_xml
from agent.hypervisor.extents import Extent
from agent.hypervisor.ports import ExtentReader
from agent.jobs import JobState
from agent.model import DiskSnapshot, Quiesce, RbdSource, SnapshotRequest
from agent.operations import backup, delete, recovery, restore, restore_in_place, snapshot
from agent.operations.services import Services
from agent.wiring import open_services
from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN

from .agent_process import hwmon_fixture
from .support import disk_source, has_marker, run_agent_process, start, stop, write_marker

TARGET = "lab-secondary"


@pytest.fixture
def target_dir(tmp_path: Path) -> Path:
    return tmp_path / "repository"


TAKEN: list[str] = []  # the snapshots a test took, deleted after it


@pytest.fixture
def svc(agent_config: AgentConfig, tmp_path: Path, target_dir: Path) -> Iterator[Services]:
    config = dataclasses.replace(agent_config, backup_targets_dir=tmp_path / "targets")
    services = open_services(config)
    added = targets.add(config.backup_targets_dir, TARGET, str(target_dir))
    services.repository(added).init()
    yield services
    while TAKEN:
        delete.delete(services, delete.DeleteRequest(TAKEN.pop()))
    services.close()


def take(svc: Services, domain: str) -> DiskSnapshot:
    (disk,) = snapshot.create(svc, SnapshotRequest(domain, quiesce=Quiesce.PREFERRED)).disks
    TAKEN.append(disk.snapshot_id)
    return disk


def backed_up(svc: Services, taken: DiskSnapshot) -> catalog.Backup:
    return backup.backup(svc, backup.BackupRequest(taken.snapshot_id, TARGET)).backup


def identical(lab: Lab, first: str, second: str) -> bool:
    done = subprocess.run(
        ["qemu-img", "compare", "-U", first, second], capture_output=True, text=True, timeout=300
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def rbd_spec(lab: Lab, spec: str) -> str:
    return f"rbd:{spec}:conf={lab.ceph_conf}"


def rbd(lab: Lab, *args: str) -> None:
    subprocess.run(["rbd", "-c", str(lab.ceph_conf), *args], check=True, timeout=120)


def test_an_rbd_volume_backed_up_full_then_incrementally_restores_identical(
    lab: Lab, svc: Services, tmp_path: Path
):
    first = take(svc, RBD_DOMAIN)
    full = backed_up(svc, first)
    second = take(svc, RBD_DOMAIN)
    incremental = backed_up(svc, second)
    image = f"rbd/restored-{uuid.uuid4().hex[:8]}"
    try:
        restore.restore(svc, restore.RestoreRequest(incremental.id, TARGET, image))
        as_taken = rbd_spec(lab, f"rbd/{RBD_DOMAIN}@hostsnap-{second.snapshot_id}")

        assert full.full and incremental.parent == full.id
        assert incremental.data_bytes < full.data_bytes  # only what changed between the two
        assert identical(lab, as_taken, rbd_spec(lab, image))
        file_copy = str(tmp_path / "restored.qcow2")
        restore.restore(svc, restore.RestoreRequest(incremental.id, TARGET, file_copy))
        assert identical(lab, as_taken, file_copy)
    finally:
        subprocess.run(["rbd", "-c", str(lab.ceph_conf), "rm", image], capture_output=True)


def test_the_stream_is_what_cephs_rbd_import_diff_reads(lab: Lab, svc: Services, tmp_path: Path):
    taken = take(svc, RBD_DOMAIN)
    made = backed_up(svc, taken)
    stream = tmp_path / "stream"
    repository = svc.repository(targets.load(svc.config.backup_targets_dir, TARGET))
    with repository.dump(made.stream, catalog.stream_path(made.id)) as source:
        stream.write_bytes(source.read())
    image = f"rbd/imported-{uuid.uuid4().hex[:8]}"
    rbd(lab, "create", "--size", f"{made.size}B", image)
    try:
        rbd(lab, "import-diff", str(stream), image)

        as_taken = rbd_spec(lab, f"rbd/{RBD_DOMAIN}@hostsnap-{taken.snapshot_id}")
        assert identical(lab, as_taken, rbd_spec(lab, image))
    finally:
        rbd(lab, "rm", image)


def test_a_qcow2_volume_backed_up_incrementally_restores_identical(
    lab: Lab, svc: Services, tmp_path: Path
):
    first = take(svc, QCOW2_DOMAIN)
    full = backed_up(svc, first)
    second = take(svc, QCOW2_DOMAIN)
    incremental = backed_up(svc, second)
    to = str(tmp_path / "restored.qcow2")

    restore.restore(svc, restore.RestoreRequest(incremental.id, TARGET, to))

    assert incremental.parent == full.id and incremental.data_bytes < full.data_bytes
    record = svc.journal.snapshot(second.snapshot_id)
    assert record is not None and identical(lab, record.content, to)
    assert restore.verify(svc, TARGET, incremental.id).backups_read == 2


@pytest.mark.parametrize("step", ["during-backup-upload", "after-backup-upload"])
def test_an_agent_killed_mid_backup_leaves_nothing_on_the_target(svc: Services, step: str):
    taken = take(svc, RBD_DOMAIN)
    key = uuid.uuid4().hex
    code = (
        "from agent.operations import backup\n"
        f"backup.backup(svc, backup.BackupRequest({taken.snapshot_id!r}, {TARGET!r}, "
        f"idempotency_key={key!r}))\n"
    )
    died = run_agent_process(svc.config, code, step)
    assert died.returncode == -9, died.stderr

    outcomes = recovery.recover(svc)

    (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
    assert job.state == JobState.FAILED and "removed" in job.detail
    repository = svc.repository(targets.load(svc.config.backup_targets_dir, TARGET))
    assert repository.snapshots() == [] and catalog.backups(repository) == []
    repository.check()


class FillsTargetOnFirstRead:
    """The image's reader, filling the target's filesystem once the upload has begun."""

    def __init__(self, reader: ExtentReader, filler: Path) -> None:
        self._reader, self._filler = reader, filler
        self.size = reader.size

    def extents(self) -> Iterator[Extent]:
        return self._reader.extents()

    def read(self, offset: int, length: int) -> bytes:
        if not self._filler.exists():
            st = os.statvfs(self._filler.parent)
            free = st.f_bavail * st.f_frsize
            subprocess.run(["fallocate", "-l", str(free - 4096), str(self._filler)], check=True)
        return self._reader.read(offset, length)


def test_a_target_that_fills_up_mid_upload_fails_the_backup(
    svc: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """apache/cloudstack#8946: a snapshot marked BackedUp with nothing stored. Here the
    target's filesystem fills up once the upload has begun."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(small)], check=True)
    try:
        added = targets.add(svc.config.backup_targets_dir, "small", str(small / "repository"))
        repository = svc.repository(added)
        repository.init()
        taken = take(svc, RBD_DOMAIN)
        filler = small / "filler"
        assert svc.images is not None
        real = svc.images.reading_rbd

        @contextlib.contextmanager
        def reading(source: RbdSource, snapshot: str, since: str | None) -> Iterator[ExtentReader]:
            with real(source, snapshot, since) as reader:
                yield FillsTargetOnFirstRead(reader, filler)

        monkeypatch.setattr(svc.images, "reading_rbd", reading)
        with pytest.raises(Capacity) as full:
            backup.backup(svc, backup.BackupRequest(taken.snapshot_id, "small"))
        assert full.value.reason == "INSUFFICIENT_CAPACITY"
        assert filler.exists(), "the target was not filled during the upload"
        filler.unlink()

        assert catalog.backups(repository) == []
        assert repository.snapshots() == []
        (job,) = [
            j
            for j in svc.journal.jobs()
            if j.operation == backup.OPERATION and j.request["snapshot_id"] == taken.snapshot_id
        ]
        assert job.state == JobState.FAILED
        repository.check()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def rbd_snapshots(lab: Lab, image: str) -> list[str]:
    out = subprocess.run(
        ["rbd", "-c", str(lab.ceph_conf), "snap", "ls", "--format", "json", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(s["name"] for s in json.loads(out))


def test_a_wrong_key_a_missing_target_and_a_damaged_pack_each_fail_clearly_changing_nothing(
    lab: Lab, svc: Services, target_dir: Path, tmp_path: Path
):
    taken = take(svc, RBD_DOMAIN)
    made = backed_up(svc, taken)
    source = f"rbd/{RBD_DOMAIN}"
    snapshots = rbd_snapshots(lab, source)
    request = backup.BackupRequest(taken.snapshot_id, TARGET)

    key = svc.config.backup_targets_dir / f"{TARGET}.key"
    right = key.read_bytes()
    key.write_text("not the target's key\n")
    with pytest.raises(Precondition) as wrong:
        backup.backup(svc, request)
    key.write_bytes(right)
    assert wrong.value.reason == "TARGET_KEY_WRONG"

    unmounted = tmp_path / "elsewhere"
    target_dir.rename(unmounted)
    target_dir.mkdir()  # what an NFS mount point shows when the export is not mounted
    with pytest.raises(Precondition) as missing:
        backup.backup(svc, request)
    target_dir.rmdir()
    unmounted.rename(target_dir)
    assert missing.value.reason == "TARGET_NOT_INITIALISED"
    assert list(target_dir.parent.glob("repository*")) == [target_dir]

    packs = [p for p in (target_dir / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))
    image = f"rbd/damaged-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Damaged) as damaged:
        restore.restore(svc, restore.RestoreRequest(made.id, TARGET, image))
    assert damaged.value.reason == "BACKUP_DAMAGED"
    assert not [i for i in rbd_images(lab) if i.startswith(image.split("/")[1])]

    assert rbd_snapshots(lab, source) == snapshots


def rbd_images(lab: Lab) -> list[str]:
    listed = subprocess.run(
        ["rbd", "-c", str(lab.ceph_conf), "ls", "rbd"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


@pytest.mark.parametrize("step", ["during-restore", "before-restore-publish"])
def test_an_agent_killed_mid_restore_leaves_no_half_image(lab: Lab, svc: Services, step: str):
    taken = take(svc, RBD_DOMAIN)
    made = backed_up(svc, taken)
    name = f"killed-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    code = (
        "from agent.operations import restore\n"
        f"restore.restore(svc, restore.RestoreRequest({made.id!r}, {TARGET!r}, 'rbd/{name}', "
        f"idempotency_key={key!r}))\n"
    )
    try:
        died = run_agent_process(svc.config, code, step)
        assert died.returncode == -9, died.stderr
        assert [i for i in rbd_images(lab) if i.startswith(name)] != []  # staged, not named

        outcomes = recovery.recover(svc)

        (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
        left = [i for i in rbd_images(lab) if i.startswith(name)]
        if step == "during-restore":
            assert job.state == JobState.FAILED and left == []
        else:
            assert job.state == JobState.SUCCEEDED and left == [name]
            as_taken = rbd_spec(lab, f"rbd/{RBD_DOMAIN}@hostsnap-{taken.snapshot_id}")
            assert identical(lab, as_taken, rbd_spec(lab, f"rbd/{name}"))
    finally:
        subprocess.run(["rbd", "-c", str(lab.ceph_conf), "rm", name], capture_output=True)


def writer_lines(dom: libvirt.virDomain) -> int:
    return int(guest_agent.exec_in_guest(dom, ["/bin/sh", "-c", "wc -l < /data/writer.log"]))


def writer_line(dom: libvirt.virDomain, number: int) -> str:
    script = f"sed -n {number}p /data/writer.log"
    return guest_agent.exec_in_guest(dom, ["/bin/sh", "-c", script]).strip()


def in_place(svc: Services, made: catalog.Backup) -> restore.RestoreResult:
    request = restore.RestoreRequest(made.id, TARGET, "", in_place=True)
    return restore_in_place.restore_in_place(svc, request)


@pytest.mark.parametrize("name", [QCOW2_DOMAIN, RBD_DOMAIN])
def test_a_guest_restored_in_place_boots_with_its_writers_lines_up_to_the_snapshot(
    conn: libvirt.virConnect, svc: Services, name: str
):
    dom = conn.lookupByName(name)
    before, after = (f"{when}-backup-{uuid.uuid4().hex[:8]}" for when in ("before", "after"))
    write_marker(dom, before)
    counted = writer_lines(dom)
    written_before = writer_line(dom, counted)
    made = backed_up(svc, take(svc, name))
    write_marker(dom, after)
    deadline = time.monotonic() + 30
    while writer_lines(dom) < counted + 10:
        assert time.monotonic() < deadline, "the guest's writer stopped"
        time.sleep(0.5)
    last = writer_lines(dom)
    written_last = writer_line(dom, last)
    with pytest.raises(Precondition) as running:
        in_place(svc, made)
    assert running.value.reason == "DOMAIN_NOT_STOPPED"
    stop(dom)
    try:
        result = in_place(svc, made)
    finally:
        start(dom)

    if name == RBD_DOMAIN:
        TAKEN.append(result.kept_snapshot_id)
        assert result.to == f"rbd/{RBD_DOMAIN}"
        assert f"hostsnap-{result.kept_snapshot_id}" in rbd_snapshots_of(svc)
    else:
        assert disk_source(dom) == result.to and os.path.exists(result.replaced_image)
    try:
        assert has_marker(dom, before) and not has_marker(dom, after)
        assert writer_line(dom, counted) == written_before  # the lines up to the snapshot
        assert writer_line(dom, last) != written_last  # the later ones gone (since rewritten)
    finally:
        if name == QCOW2_DOMAIN:
            back_on_its_chain(svc, dom, result)


def back_on_its_chain(svc: Services, dom: libvirt.virDomain, result: restore.RestoreResult) -> None:
    """The qcow2 guest on the chain it had (the tests after this one expect its base), the
    standalone image the restore made removed."""
    stop(dom)
    try:
        xml = svc.host.xml(QCOW2_DOMAIN, inactive=True)
        svc.host.define(domain_xml.with_disk_source(xml, "vda", result.replaced_image))
        svc.journal.set_active_layer(QCOW2_DOMAIN, "vda", result.replaced_image, [])
        svc.journal.forget_layer(result.to)
        svc.publish_layers()
        os.unlink(result.to)
    finally:
        start(dom)


def rbd_snapshots_of(svc: Services) -> set[str]:
    return {s.name for s in svc.rbd.snapshots(RbdSource("rbd", RBD_DOMAIN))}


@pytest.mark.parametrize("step", ["during-restore", "before-restore-publish"])
def test_an_agent_killed_mid_restore_in_place_leaves_the_rbd_image_before_or_after(
    conn: libvirt.virConnect, svc: Services, step: str
):
    dom = conn.lookupByName(RBD_DOMAIN)
    made = backed_up(svc, take(svc, RBD_DOMAIN))
    key = uuid.uuid4().hex
    after = f"after-backup-{key[:8]}"
    write_marker(dom, after)
    code = (
        "from agent.operations import restore, restore_in_place\n"
        "restore_in_place.restore_in_place(svc, restore.RestoreRequest("
        f"{made.id!r}, {TARGET!r}, '', idempotency_key={key!r}, in_place=True))\n"
    )
    stop(dom)
    try:
        snapshots_before = rbd_snapshots_of(svc)
        died = run_agent_process(svc.config, code, step)
        assert died.returncode == -9, died.stderr

        outcomes = recovery.recover(svc)
    finally:
        start(dom)

    (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
    if step == "during-restore":
        assert job.state == JobState.FAILED, job.detail
        assert has_marker(dom, after)  # rolled back: as it was before the job
        assert rbd_snapshots_of(svc) == snapshots_before
    else:
        assert job.state == JobState.SUCCEEDED, job.detail
        assert not has_marker(dom, after)
        kept = (svc.journal.get(job.job_id).result or {})["kept_snapshot_id"]
        TAKEN.append(kept)
        assert rbd_snapshots_of(svc) == snapshots_before | {f"hostsnap-{kept}"}


def test_a_backup_on_a_hot_host_reads_at_the_throttled_speed_each_change_a_step(
    svc: Services, tmp_path: Path
):
    # The sensor reads 47 °C: under the 50 °C ceiling (admitted), over 0.9 of it (throttled).
    config = dataclasses.replace(svc.config, sysfs_root=hwmon_fixture(tmp_path / "sysfs"))
    hot = open_services(
        config, AdmissionConfig(temperature_ceiling=50.0, throttled_bandwidth_mib=32)
    )
    try:
        taken = take(hot, RBD_DOMAIN)
        started = time.monotonic()
        done = backup.backup(hot, backup.BackupRequest(taken.snapshot_id, TARGET, full=True))
        took = time.monotonic() - started
        job = hot.journal.get(done.job_id)
    finally:
        hot.close()

    names = [s.name for s in job.steps]
    assert "admitted" in names
    (speed,) = [s.detail for s in job.steps if s.name == "read-speed"]
    assert speed["mib"] == 32 and "47.0 °C" in speed["reason"]
    assert took >= (done.backup.data_bytes - backup.CHUNK) / (32 << 20)
