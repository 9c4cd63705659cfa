"""Removing a backup from its target: its stream and its marker forgotten, their data pruned.
A backup others build on is removed only with them (with_descendants): without it they could
not be restored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent import steps, validate
from agent.backups import catalog
from agent.errors import Precondition
from agent.jobs import Job, JobState
from agent.operations import jobrun
from agent.operations.backup import open_target
from agent.operations.services import Services

OPERATION = "backup-delete"


class Step(steps.StepName):
    FORGET = "forget"  # these restic snapshots are about to be forgotten and pruned


@dataclass(frozen=True)
class Forget:
    target: str
    snapshots: tuple[str, ...]
    backups: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteBackupRequest:
    backup_id: str
    target: str
    with_descendants: bool = False
    idempotency_key: str | None = None


@dataclass(frozen=True)
class DeleteBackupResult:
    removed_ids: tuple[str, ...]


def delete_backup(
    svc: Services, request: DeleteBackupRequest, on_started: Callable[[str], None] | None = None
) -> DeleteBackupResult:
    validate.backup_id(request.backup_id)
    _, repository = open_target(svc, request.target)
    found = catalog.backups(repository)
    doomed = [catalog.find(found, request.backup_id)]
    for backup in doomed:  # grows while it is walked: every descendant
        doomed += catalog.children(found, backup.id)
    if len(doomed) > 1 and not request.with_descendants:
        others = ", ".join(b.id for b in doomed[1:])
        raise Precondition(
            f"backups {others} build on backup {request.backup_id}: remove them with it "
            "(with_descendants) or keep it",
            reason="BACKUP_HAS_DESCENDANTS",
        )

    def body(job_id: str) -> DeleteBackupResult:
        restic_ids = tuple(
            s.id for b in doomed for s in repository.snapshots([catalog.of_backup(b.id)])
        )
        removed = tuple(b.id for b in doomed)
        steps.write(svc.journal, job_id, Step.FORGET, Forget(request.target, restic_ids, removed))
        repository.forget(restic_ids, prune=True)
        return DeleteBackupResult(removed)

    spec = jobrun.JobSpec(
        OPERATION,
        "",
        [f"backup {b.id}" for b in doomed],
        {"backup_id": request.backup_id, "target": request.target},
    )
    return jobrun.run(
        svc,
        spec,
        request.idempotency_key,
        body,
        lambda d: DeleteBackupResult(tuple(d["removed_ids"])),
        on_started,
    )


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    forget = steps.read(job, Step.FORGET, Forget)
    if forget is None:
        return JobState.FAILED, "it stopped before removing anything"
    _, repository = open_target(svc, forget.target)
    repository.unlock()
    left = {s.id for s in repository.snapshots()} & set(forget.snapshots)
    repository.forget(sorted(left), prune=True)
    svc.journal.succeed(job.id, {"removed_ids": list(forget.backups)})
    return JobState.SUCCEEDED, "the removal was finished"
