"""Restore: a volume rebuilt at a backup's snapshot from the target alone (the full backup,
then each incremental one over it), into a new image: a qcow2 file (`/path`) or an RBD image
(`pool/image`). Needs neither the original chain nor its pool, so any host that reaches the
target and holds its key can restore. Each stream is checked against the SHA-256 it was
verified with. The image is written under a staged name (`<to>.hostsnap-restore-<job>`) and
takes its own name only once whole, so no one sees half an image under it; a restore that
fails or dies removes the staged image and never touches an image already called `to`.

Verify reads a backup's chain back the same way, writing nothing."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from typing import IO

from agent import faults, steps, validate
from agent.backups import catalog, diff_stream
from agent.backups.catalog import Backup
from agent.errors import Damaged, HostsnapError, InvalidArgument, NotFound, Precondition
from agent.hypervisor.ports import BackupRepository, ExtentWriter
from agent.jobs import Job, JobState
from agent.model import RbdSource
from agent.operations import jobrun
from agent.operations.backup import CHUNK, images, open_target
from agent.operations.overlap import write_behind
from agent.operations.services import Services

log = logging.getLogger(__name__)

OPERATION = "restore"
VERIFY = "backup-verify"


class Step(steps.StepName):
    PLAN = "plan"  # the staged image is about to be made (removed again if the job dies)
    RESTORED = "restored"  # it holds the backup's snapshot, every stream checked; it is
    # about to take its name


@dataclass(frozen=True)
class Plan:
    to: str
    chain: tuple[str, ...]  # backup ids, the full one first


@dataclass(frozen=True)
class Restored:
    size: int
    data_bytes: int


@dataclass(frozen=True)
class RestoreRequest:
    backup_id: str
    target: str
    to: str  # "/path/of/new.qcow2" or "pool/new-image"; "" in place
    idempotency_key: str | None = None
    in_place: bool = False  # onto the backup's own volume (restore_in_place)


@dataclass(frozen=True)
class RestoreResult:
    job_id: str
    backup_id: str
    to: str
    size: int
    backups_applied: int
    data_bytes: int
    kept_snapshot_id: str = ""  # in place on RBD: the snapshot of the image as it was
    replaced_image: str = ""  # in place on a file volume: the active image before


@dataclass(frozen=True)
class VerifyResult:
    backup_id: str
    backups_read: int
    stream_bytes: int


def destination(to: str) -> str | RbdSource:
    """A new file's path, or the RBD image "pool/image"."""
    if to.startswith("/"):
        return validate.new_image_path(to)
    if "/" in to:
        pool, image = validate.rbd_image(to)
        return RbdSource(pool, image)
    raise InvalidArgument(
        f"restore to {to!r}: an absolute path (a new qcow2 file) or pool/image (a new RBD image)",
        reason="INVALID_DESTINATION",
    )


def staged(where: str | RbdSource, job_id: str) -> str | RbdSource:
    suffix = f".hostsnap-restore-{job_id}"
    if isinstance(where, str):
        return where + suffix
    return dataclasses.replace(where, image=where.image + suffix)


def _exists(where: str | RbdSource) -> bool:
    if isinstance(where, str):
        return os.path.lexists(where)
    return False  # an RBD image of that name is refused when the staged one is renamed


def restore(
    svc: Services, request: RestoreRequest, on_started: Callable[[str], None] | None = None
) -> RestoreResult:
    validate.backup_id(request.backup_id)
    where = destination(request.to)
    if isinstance(where, str) and not os.path.isdir(os.path.dirname(where)):
        raise Precondition(f"{os.path.dirname(where)} is not a directory", reason="NO_DIRECTORY")
    _, repository = open_target(svc, request.target)
    links = chain_of(repository, request.backup_id)
    size = links[-1].size

    def body(job_id: str) -> RestoreResult:
        # Here, not before the job: the same idempotency key again returns the job that
        # made the image, not a refusal because it now exists.
        if _exists(where):
            raise Precondition(f"{request.to} exists already", reason="IMAGE_EXISTS")
        steps.write(svc.journal, job_id, Step.PLAN, Plan(request.to, tuple(b.id for b in links)))
        staging = staged(where, job_id)
        with _creating(svc, staging, size) as writer:
            jobrun.checkpoint(svc, job_id, "applying the backups")
            with closing(applied(repository, links, writer)) as backups:
                for index, backup in enumerate(backups):
                    svc.journal.set_progress(job_id, (index + 1) / len(links))
                    faults.point(faults.Step.DURING_RESTORE)
                    jobrun.checkpoint(svc, job_id, f"applying the backups after {backup.id}")
        data = sum(b.data_bytes for b in links)
        steps.write(svc.journal, job_id, Step.RESTORED, Restored(size, data))
        faults.point(faults.Step.BEFORE_RESTORE_PUBLISH)
        try:
            _publish(svc, staging, where)
        except HostsnapError:
            _remove(svc, staging)
            raise
        log.info("job %s: backup %s restored to %s", job_id, request.backup_id, request.to)
        return RestoreResult(job_id, request.backup_id, request.to, size, len(links), data)

    spec = jobrun.JobSpec(
        OPERATION,
        "",
        [f"restore {request.to}"],
        {"backup_id": request.backup_id, "target": request.target, "to": request.to},
    )
    return jobrun.run(
        svc, spec, request.idempotency_key, body, lambda d: RestoreResult(**d), on_started
    )


def chain_of(repository: BackupRepository, backup_id: str) -> list[Backup]:
    """The backups a restore of `backup_id` applies, the full one first."""
    links = catalog.chain(catalog.backups(repository), backup_id)
    if any(b.size != links[-1].size for b in links):
        raise Precondition(
            f"the volume was resized between the backups of {backup_id}; restoring across a "
            "resize is not supported",
            reason="BACKUP_CHAIN_RESIZED",
        )
    return links


def _creating(
    svc: Services, where: str | RbdSource, size: int
) -> AbstractContextManager[ExtentWriter]:
    if isinstance(where, str):
        return images(svc).creating_file(where, size)
    return images(svc).creating_rbd(where, size)


def applied(
    repository: BackupRepository, links: Sequence[Backup], writer: ExtentWriter | None
) -> Generator[Backup, None, None]:
    """Reads each backup's stream from the target in turn, writing it through `writer` (None:
    only read); yields each backup once it is applied. Damaged when a stream is not what was
    verified. The next backup's restic starts while one is read: its key derivation (0.7 s)
    overlaps this one's data, as the image's writes overlap restic's reading."""
    streams = [repository.dump(b.stream, catalog.stream_path(b.id)) for b in links]
    started: list[AbstractContextManager[IO[bytes]]] = []

    def start(index: int) -> IO[bytes]:
        source = streams[index].__enter__()
        started.append(streams[index])
        return source

    try:
        sources = [start(0)]
        for index, backup in enumerate(links):
            if index + 1 < len(links):
                sources.append(start(index + 1))
            _apply(backup, sources[index], writer)
            started.remove(streams[index])
            streams[index].__exit__(None, None, None)  # restic's own failure raised here
            yield backup
    except BaseException as e:
        for stream in reversed(started):
            stream.__exit__(type(e), e, e.__traceback__)
        raise


def _apply(backup: Backup, source: IO[bytes], writer: ExtentWriter | None) -> None:
    try:
        reader = diff_stream.Reader(source, max_data=CHUNK)
        with write_behind(writer) if writer is not None else nullcontext() as behind:
            for record in reader.records():
                if behind is None:
                    continue
                if isinstance(record, diff_stream.Data):
                    behind.write(record.offset, record.data)
                else:
                    behind.zero(record.offset, record.length)
    except diff_stream.StreamError as e:
        raise Damaged(f"backup {backup.id} on the target is damaged: {e}") from e
    if reader.sha256 != backup.sha256:
        raise Damaged(
            f"backup {backup.id} on the target is not what was verified (SHA-256 "
            f"{reader.sha256}, verified {backup.sha256})"
        )


def verify(
    svc: Services,
    target: str,
    backup_id: str,
    idempotency_key: str | None = None,
    on_started: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Reads the backup and every backup it needs back from the target and checks them (a
    job: a long chain takes long to read); changes nothing."""
    validate.backup_id(backup_id)
    _, repository = open_target(svc, target)
    links = catalog.chain(catalog.backups(repository), backup_id)

    def body(job_id: str) -> VerifyResult:
        jobrun.checkpoint(svc, job_id, "reading the backups")
        with closing(applied(repository, links, None)) as backups:
            for index, backup in enumerate(backups):
                svc.journal.set_progress(job_id, (index + 1) / len(links))
                jobrun.checkpoint(svc, job_id, f"reading the backups after {backup.id}")
        return VerifyResult(backup_id, len(links), sum(b.stream_bytes for b in links))

    spec = jobrun.JobSpec(
        VERIFY, "", [f"backup {backup_id}"], {"backup_id": backup_id, "target": target}
    )
    return jobrun.run(svc, spec, idempotency_key, body, lambda d: VerifyResult(**d), on_started)


def recover_verify(svc: Services, job: Job) -> tuple[JobState, str]:
    return JobState.FAILED, "interrupted; it changes nothing: verify again"


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    plan = steps.read(job, Step.PLAN, Plan)
    if plan is None:
        return JobState.FAILED, "it stopped before making anything"
    where = destination(plan.to)
    staging = staged(where, job.id)
    restored = steps.read(job, Step.RESTORED, Restored)
    if restored is not None:
        try:
            _publish(svc, staging, where)
        except Precondition as e:
            _remove(svc, staging)
            return JobState.FAILED, f"interrupted before the image took its name, and {e}"
        result = RestoreResult(
            job.id, job.request["backup_id"], plan.to, restored.size, len(plan.chain),
            restored.data_bytes,
        )  # fmt: skip
        svc.journal.succeed(job.id, jobrun.to_json(result))
        return JobState.SUCCEEDED, "the image was whole before the restart; it has its name"
    _remove(svc, staging)
    return JobState.FAILED, f"interrupted; the partly restored image for {plan.to} was removed"


def _publish(svc: Services, staging: str | RbdSource, where: str | RbdSource) -> None:
    if isinstance(staging, str) and isinstance(where, str):
        images(svc).publish_file(staging, where)
    elif isinstance(staging, RbdSource) and isinstance(where, RbdSource):
        try:
            images(svc).publish_rbd(staging, where)
        except NotFound:
            # The staged image is gone once renamed (published before a restart): then the
            # image is there under its name (else NotFound, the restore did not happen).
            svc.rbd.size(where)
            log.info("RBD %s: renamed to %s already", staging.spec, where.spec)


def _remove(svc: Services, staging: str | RbdSource) -> None:
    if isinstance(staging, str):
        images(svc).remove_file(staging)
    else:
        images(svc).remove_rbd(staging)
