"""An agent's job as plain data: the protobuf message stays at the edge (`from_proto`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class AgentJobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not AgentJobState.RUNNING


# JobState numbers of agent.proto; UNSPECIFIED (0) is read as still running.
_STATES = {
    1: AgentJobState.RUNNING,
    2: AgentJobState.SUCCEEDED,
    3: AgentJobState.FAILED,
    4: AgentJobState.CANCELLED,
}
# VolumeKind and Consistency numbers of agent.proto; UNSPECIFIED (0) is read as "".
VOLUME_KINDS = {1: "file", 2: "rbd"}
CONSISTENCIES = {1: "application", 2: "crash", 3: "unknown"}


@dataclass(frozen=True)
class SnapshotDisk:
    """What one disk got from a snapshot job."""

    target: str  # the disk's target device, e.g. "vda"
    kind: str  # "file" or "rbd" ("" when the agent did not say)
    snapshot_id: str
    content: str  # file: the layer holding the snapshot's content; RBD: "pool/image@snap"
    active_image: str  # the disk's active image afterwards: a file path, or "pool/image"
    method: str = ""  # "qcow2-overlay", "rbd-short-freeze", ...; "" for a stopped domain


@dataclass(frozen=True)
class AgentJob:
    id: str
    operation: str
    state: AgentJobState
    domain: str
    idempotency_key: str
    steps: tuple[str, ...] = ()
    snapshot_ids: tuple[str, ...] = ()  # of a snapshot job that succeeded, one per disk
    # A snapshot job that succeeded: each disk's result, and what the content is consistent
    # with ("application", "crash", "unknown"; "" for any other job). A delete job that
    # succeeded: its disk, with the active image after the merge.
    disks: tuple[SnapshotDisk, ...] = ()
    consistency: str = ""
    error_code: str = ""
    error_reason: str = ""
    error_message: str = ""
    retry_after: float = 0.0
    backup_id: str = ""  # of a backup job that succeeded
    restored_to: str = ""  # of a restore job that succeeded: the image written

    @property
    def error(self) -> str:
        """The agent's error as one line, for the store's job record."""
        parts = [p for p in (self.error_code, self.error_reason) if p]
        head = "/".join(parts) or "failed"
        return f"agent job {self.id}: {head}: {self.error_message}"

    def disk(self, target: str) -> SnapshotDisk | None:
        """The snapshot result of the disk `target`, if the job snapshotted it."""
        return next((d for d in self.disks if d.target == target), None)

    @classmethod
    def from_proto(cls, job: Any) -> AgentJob:
        has_error = job.HasField("error")
        disks: tuple[SnapshotDisk, ...] = ()
        consistency = ""
        if job.WhichOneof("result") == "snapshot":
            consistency = CONSISTENCIES.get(int(job.snapshot.consistency), "")
            disks = tuple(
                SnapshotDisk(
                    target=str(d.target),
                    kind=VOLUME_KINDS.get(int(d.kind), ""),
                    snapshot_id=str(d.snapshot_id),
                    content=str(d.content),
                    active_image=str(d.active_image),
                    method=str(d.method),
                )
                for d in job.snapshot.disks
            )
        snapshot_ids = tuple(d.snapshot_id for d in disks)
        if job.WhichOneof("result") == "delete":  # the disk's active image may have moved
            deleted = job.delete
            kind = "file" if str(deleted.active_image).startswith("/") else "rbd"
            disks = (
                SnapshotDisk(
                    target=str(deleted.target),
                    kind=kind,
                    snapshot_id=str(deleted.snapshot_id),
                    content="",
                    active_image=str(deleted.active_image),
                    method="delete",
                ),
            )
        return cls(
            id=str(job.id),
            operation=str(job.operation),
            state=_STATES.get(int(job.state), AgentJobState.RUNNING),
            domain=str(job.domain),
            idempotency_key=str(job.idempotency_key),
            steps=tuple(str(s) for s in job.steps),
            snapshot_ids=snapshot_ids,
            disks=disks,
            consistency=consistency,
            error_code=str(job.error.code) if has_error else "",
            error_reason=str(job.error.reason) if has_error else "",
            error_message=str(job.error.message) if has_error else "",
            retry_after=float(job.error.retry_after_seconds) if has_error else 0.0,
            backup_id=str(job.backup.id) if job.WhichOneof("result") == "backup" else "",
            restored_to=str(job.restore.to) if job.WhichOneof("result") == "restore" else "",
        )
