"""Backup: a snapshot's data copied to a backup target, incremental over the volume's last
backup whose snapshot still exists, and BackedUp only once what the target holds was read back
and matched.

What is read: for an RBD volume the extents changed between the two RBD snapshots (librbd
diff_iterate); for a qcow2 volume the extents allocated in the layers above the previous
backup's layer (qemu-nbd's allocation depth). A full backup sends the allocated extents only,
zeroes never. The stream is Ceph's rbd diff v1 (agent/backups/diff_stream.py); restic
compresses, encrypts and deduplicates it on the host before it leaves.

A failed backup leaves nothing on the target: an upload that breaks is killed before restic
sees the stream end (no snapshot is made), and a stream that does not read back whole and
equal is forgotten and pruned."""

from __future__ import annotations

import functools
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any

from agent import faults, steps, validate
from agent.backups import catalog, diff_stream, targets
from agent.backups.catalog import Backup
from agent.errors import Capacity, HostsnapError, NotFound, OperationFailed, Precondition
from agent.hypervisor import qemu_img
from agent.hypervisor.extents import Extent
from agent.hypervisor.ports import BackupRepository, ExtentReader, Images
from agent.jobs import Job, JobState, SnapshotRecord
from agent.model import Volume, VolumeKind
from agent.operations import backup_pace, jobrun, overlap, revert, stats
from agent.operations.jobrun import to_json
from agent.operations.services import Services
from agent.operations.snapshot import RBD_PREFIX

log = logging.getLogger(__name__)

OPERATION = "backup"
CHUNK = 4 << 20  # bytes read from the image at a time
# Room kept free on a directory target beyond the stream's estimated size.
FREE_MARGIN = 0.05


class Step(steps.StepName):
    PLAN = "plan"  # the backup is about to be uploaded (its id tags all it writes)
    UPLOADED = "uploaded"  # the stream is on the target, not yet read back
    VERIFIED = "verified"  # it read back equal; the marker that makes it a backup is written


@dataclass(frozen=True)
class Plan:
    backup_id: str
    target: str
    parent: str  # "" for a full backup
    extents: int
    data_bytes: int
    size: int = 0  # the image's at the snapshot (older journals lack it)


@dataclass(frozen=True)
class Uploaded:
    stream: str  # restic's snapshot id
    sha256: str
    stream_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class Verified:
    marker: str


@dataclass(frozen=True)
class BackupRequest:
    snapshot_id: str
    target: str
    domain: str = ""
    full: bool = False  # a full backup even when an incremental one could be made
    idempotency_key: str | None = None


@dataclass(frozen=True)
class BackupResult:
    job_id: str
    backup: Backup
    target: str


def images(svc: Services) -> Images:
    if svc.images is None:
        raise AssertionError("no Images were given to these Services")
    return svc.images


def open_target(svc: Services, name: str) -> tuple[targets.Target, BackupRepository]:
    """The target and its repository, which must exist (an NFS export not mounted shows an
    empty directory: hostsnap never makes a repository there on its own)."""
    target = targets.load(svc.config.backup_targets_dir, name)
    repository = svc.repository(target)
    if not repository.present():
        raise Precondition(
            f"backup target {name} has no repository at {target.repository} (not mounted, or "
            "never initialised: `hostsnap backup target add` makes one)",
            reason="TARGET_NOT_INITIALISED",
        )
    return target, repository


def listed(svc: Services, target: str, domain: str = "") -> list[Backup]:
    """The target's backups (of `domain`), oldest first."""
    validate.target_name(target)
    if domain:
        validate.domain_name(domain)
    _, repository = open_target(svc, target)
    return catalog.backups(repository, domain)


def backup(
    svc: Services, request: BackupRequest, on_started: Callable[[str], None] | None = None
) -> BackupResult:
    validate.target_name(request.target)
    record, volume = revert.find(svc, request.snapshot_id, request.domain)
    target, repository = open_target(svc, request.target)

    def body(job_id: str) -> BackupResult:
        record_step = functools.partial(svc.journal.record, job_id)
        checkpoint = functools.partial(jobrun.checkpoint, svc, job_id, "admission")
        with svc.admission.admitted(job_id, {stats.pool_of(volume)}, record_step, checkpoint):
            made = _backed_up(svc, job_id, request, record, volume, target.name, repository)
        return BackupResult(job_id, made, target.name)

    spec = jobrun.JobSpec(
        OPERATION,
        record.domain,
        [volume.key],
        {"snapshot_id": record.id, "target": request.target, "full": request.full},
    )
    return jobrun.run(svc, spec, request.idempotency_key, body, _from_dict, on_started)


def _backed_up(
    svc: Services,
    job_id: str,
    request: BackupRequest,
    record: SnapshotRecord,
    volume: Volume,
    target: str,
    repository: BackupRepository,
) -> Backup:
    """Each restic run spends about 0.7 s deriving the key before it reads anything: the
    stream's restic starts while the catalog is read and the extents planned, and the marker's
    while the stream is read back. Either is killed before its stream ends if that fails."""
    planned: list[Plan] = []
    sent = diff_stream.Summary()

    def plan_and_send(sink: IO[bytes]) -> None:
        found = catalog.backups(repository)
        parent, since = (None, None) if request.full else _parent(svc, record, volume, found)
        with _reading(svc, record, volume, since) as reader:
            extents = list(reader.extents())
            data_bytes = sum(e.length for e in extents if not e.zero)
            _check_room(repository, target, data_bytes, len(extents))
            jobrun.checkpoint(svc, job_id, "the upload")
            parent_id = parent.id if parent else ""
            plan = Plan(job_id, target, parent_id, len(extents), data_bytes, reader.size)
            steps.write(svc.journal, job_id, Step.PLAN, plan)
            planned.append(plan)
            _send(svc, job_id, volume, plan, reader, extents, sink, sent)

    path = catalog.stream_path(job_id)
    try:
        uploaded = repository.backup(
            path, catalog.stream_tags(job_id, volume.key), socket.gethostname(), plan_and_send
        )
        stream = Uploaded(uploaded.snapshot_id, sent.sha256, sent.bytes, uploaded.bytes_added)
        steps.write(svc.journal, job_id, Step.UPLOADED, stream)
        faults.point(faults.Step.AFTER_BACKUP_UPLOAD)
        made = _made(svc, record, volume, planned[0], stream)
        marker = repository.backup(
            f"/hostsnap/{made.id}.verified.json",
            made.marker_tags(),
            made.host,
            functools.partial(_read_back_then_mark, repository, stream, path, made),
        ).snapshot_id
    except BaseException:
        if planned:
            _remove_partial(repository, job_id)
        else:
            _release(repository, job_id)
        raise
    steps.write(svc.journal, job_id, Step.VERIFIED, Verified(marker))
    log.info(
        "job %s: backup %s of snapshot %s on %s (%s, %d data bytes, %d stored)",
        job_id,
        made.id,
        record.id,
        target,
        "full" if made.full else f"over {made.parent}",
        made.data_bytes,
        made.stored_bytes,
    )
    return made


def _parent(
    svc: Services, record: SnapshotRecord, volume: Volume, found: list[Backup]
) -> tuple[Backup | None, str | int | None]:
    """The backup to build on, and what the reader starts from: the RBD snapshot's name, or
    the depth of its layer in this snapshot's chain; (None, None) for a full backup."""
    # Whether a backup is of this image is proven below: its layer in this snapshot's chain,
    # its RBD snapshot on this image.
    earlier = [b for b in found if b.volume == volume.key and b.taken < record.created]
    chain = (
        [layer.path for layer in qemu_img.chain(record.content)]
        if record.kind == VolumeKind.FILE
        else []
    )
    rbd_names = {s.name for s in svc.rbd.snapshots(volume.rbd)} if volume.rbd is not None else set()
    for candidate in sorted(earlier, key=lambda b: b.taken, reverse=True):
        parent_record = svc.journal.snapshot(candidate.snapshot_id)
        if parent_record is None or parent_record.deleted is not None:
            continue  # its layer may have been merged since: not a base to diff from
        if record.kind == VolumeKind.FILE and parent_record.content in chain:
            return candidate, chain.index(parent_record.content) + 1
        name = f"{RBD_PREFIX}{candidate.snapshot_id}"
        if record.kind == VolumeKind.RBD and name in rbd_names:
            return candidate, name
    return None, None


def _reading(
    svc: Services, record: SnapshotRecord, volume: Volume, since: str | int | None
) -> AbstractContextManager[ExtentReader]:
    if record.kind == VolumeKind.FILE:
        assert not isinstance(since, str)
        return images(svc).reading_file(record.content, since)
    assert volume.rbd is not None and not isinstance(since, int)
    return images(svc).reading_rbd(volume.rbd, f"{RBD_PREFIX}{record.id}", since)


def _check_room(repository: BackupRepository, target: str, data_bytes: int, records: int) -> None:
    """Refused before anything is written when a directory target cannot take the stream
    (counted uncompressed: what compression saves is not known before)."""
    free = repository.free_bytes()
    needed = int((data_bytes + 17 * records + 4096) * (1 + FREE_MARGIN))
    if free is not None and needed > free:
        raise Capacity(
            f"Insufficient Capacity on backup target {target}: the backup needs up to "
            f"{needed} bytes, {free} are free at {repository.repository}",
            reason="INSUFFICIENT_CAPACITY",
        )


def _send(
    svc: Services,
    job_id: str,
    volume: Volume,
    plan: Plan,
    reader: ExtentReader,
    extents: list[Extent],
    sink: IO[bytes],
    sent: diff_stream.Summary,
) -> None:
    pace = backup_pace.ReadPace(svc, job_id, {stats.pool_of(volume)})
    writer = diff_stream.Writer(sink, diff_stream.Header(None, None, reader.size))
    done = 0
    for extent, data in overlap.read_ahead(_chunks(reader, extents)):
        if data is None:
            writer.zero(extent.offset, extent.length)
            continue
        writer.data(extent.offset, data)
        pace.read(extent.length)
        done += extent.length
        faults.point(faults.Step.DURING_BACKUP_UPLOAD)
        jobrun.checkpoint(svc, job_id, "the rest of the upload")
        svc.journal.set_progress(job_id, 0.9 * done / max(plan.data_bytes, 1))
    sent.sha256, sent.bytes = writer.end(), writer.bytes


def _chunks(reader: ExtentReader, extents: list[Extent]) -> Iterator[tuple[Extent, bytes | None]]:
    """Each extent in reads of CHUNK bytes at most, with their data (None: zeroes)."""
    for extent in extents:
        if extent.zero:
            yield extent, None
            continue
        for offset in range(extent.offset, extent.offset + extent.length, CHUNK):
            length = min(CHUNK, extent.offset + extent.length - offset)
            yield Extent(offset, length, False), reader.read(offset, length)


def _made(
    svc: Services,
    record: SnapshotRecord,
    volume: Volume,
    plan: Plan,
    stream: Uploaded,
) -> Backup:
    return Backup(
        id=plan.backup_id,
        volume=volume.key,
        image=record.content if record.kind == VolumeKind.FILE else volume.location,
        kind=record.kind,
        snapshot_id=record.id,
        snapshot_name=record.name,
        parent=plan.parent,
        size=plan.size,
        sha256=stream.sha256,
        stream_bytes=stream.stream_bytes,
        data_bytes=plan.data_bytes,
        stored_bytes=stream.stored_bytes,
        taken=record.created,
        backed_up=svc.wall_clock(),
        host=socket.gethostname(),
        stream=stream.stream,
    )


def _read_back_then_mark(
    repository: BackupRepository, stream: Uploaded, path: str, made: Backup, sink: IO[bytes]
) -> None:
    """The stream as the target gives it back: whole, well formed, and of the same SHA-256;
    only then the marker that makes it a backup."""
    try:
        with repository.dump(stream.stream, path) as source:
            reader = diff_stream.Reader(source)
            for _ in reader.records():
                pass
    except diff_stream.StreamError as e:
        raise OperationFailed(f"the backup read back from the target is damaged: {e}") from e
    if reader.sha256 != stream.sha256:
        raise OperationFailed(
            f"the backup read back from the target differs from what was sent (SHA-256 "
            f"{reader.sha256}, sent {stream.sha256})",
            reason="BACKUP_VERIFY_FAILED",
        )
    sink.write(json.dumps(to_json(made), indent=1, sort_keys=True).encode())


def _release(repository: BackupRepository, backup_id: str) -> None:
    """The lock of a restic killed before it read anything: all it left."""
    try:
        repository.unlock()
    except HostsnapError as e:
        log.warning("backup %s: its lock on %s stays: %s", backup_id, repository.repository, e)


def _remove_partial(repository: BackupRepository, backup_id: str) -> str:
    """Whatever the backup left on the target: its snapshots forgotten, their data pruned
    (a killed restic leaves packs no snapshot names, and its lock). Says what became of it."""
    try:
        repository.unlock()
        left = [s.id for s in repository.snapshots([catalog.of_backup(backup_id)])]
        if left:
            repository.forget(left, prune=True)
        else:
            repository.prune()
    except HostsnapError as e:
        log.error("backup %s: what it left on %s stays: %s", backup_id, repository.repository, e)
        return f"what it had uploaded could not be removed from the target ({e})"
    return "what it had uploaded was removed from the target"


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    """A backup whose marker is on the target was verified before the marker was written:
    it is done. Anything else it left is removed."""
    plan = steps.read(job, Step.PLAN, Plan)
    if plan is None:
        return JobState.FAILED, "it stopped before uploading anything"
    try:
        _, repository = open_target(svc, plan.target)
    except (NotFound, Precondition) as e:
        return JobState.FAILED, f"interrupted; its target cannot be reached to clean up: {e}"
    for backup in catalog.backups(repository):
        if backup.id == plan.backup_id:
            svc.journal.succeed(job.id, to_json(BackupResult(job.id, backup, plan.target)))
            return JobState.SUCCEEDED, "its backup was verified and recorded before the restart"
    return JobState.FAILED, f"interrupted; {_remove_partial(repository, plan.backup_id)}"


def _from_dict(data: dict[str, Any]) -> BackupResult:
    return BackupResult(data["job_id"], Backup(**data["backup"]), data["target"])
