"""A policy snapshot's state in CloudStack's words, from the store's jobs: its snapshot job
and the backup jobs made for it (controller/runner/backups.py).

Creating: the snapshot job has not ended. CreatedOnPrimary: the snapshot exists on primary
storage and is not backed up (its policy backs nothing up, or no backup job was made).
BackingUp: a backup job has not ended. BackedUp: every disk's backup was verified on the
target. Error: the snapshot job or a backup job failed or was cancelled."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from controller import store


class SnapshotState(enum.StrEnum):
    CREATING = "Creating"
    CREATED_ON_PRIMARY = "CreatedOnPrimary"
    BACKING_UP = "BackingUp"
    BACKED_UP = "BackedUp"
    ERROR = "Error"


@dataclass(frozen=True)
class PolicySnapshot:
    job_id: str
    run_id: str | None
    vm_id: str | None
    volume_id: str | None
    name: str
    host_id: str
    created_at: datetime
    state: SnapshotState
    backup_target: str  # "" when not backed up
    error: str  # why it is in Error


def snapshot_states(jobs: list[store.Job]) -> list[PolicySnapshot]:
    """The snapshot jobs among `jobs`, each with its state, in the order given."""
    backups: dict[str, list[store.Job]] = {}
    for job in jobs:
        if job.kind is store.JobKind.BACKUP:
            backups.setdefault(job.params.get("snapshot_job", ""), []).append(job)
    return [
        _snapshot(job, backups.get(job.id, []))
        for job in jobs
        if job.kind is store.JobKind.SNAPSHOT
    ]


def _snapshot(job: store.Job, backups: list[store.Job]) -> PolicySnapshot:
    state, error = _state(job, backups)
    return PolicySnapshot(
        job_id=job.id,
        run_id=job.run_id,
        vm_id=job.vm_id,
        volume_id=job.volume_id,
        name=job.params.get("name", ""),
        host_id=job.host_id,
        created_at=job.created_at,
        state=state,
        backup_target=backups[0].params.get("target", "") if backups else "",
        error=error,
    )


def _state(job: store.Job, backups: list[store.Job]) -> tuple[SnapshotState, str]:
    if not job.state.final:
        return SnapshotState.CREATING, ""
    if job.state is not store.JobState.SUCCEEDED:
        return SnapshotState.ERROR, job.error or job.state.value
    failed = [b for b in backups if b.state.final and b.state is not store.JobState.SUCCEEDED]
    if failed:
        return SnapshotState.ERROR, "; ".join(b.error or b.state.value for b in failed)
    if not backups:
        return SnapshotState.CREATED_ON_PRIMARY, ""
    if any(not b.state.final for b in backups):
        return SnapshotState.BACKING_UP, ""
    return SnapshotState.BACKED_UP, ""
