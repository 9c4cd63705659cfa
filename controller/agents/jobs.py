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


@dataclass(frozen=True)
class AgentJob:
    id: str
    operation: str
    state: AgentJobState
    domain: str
    idempotency_key: str
    steps: tuple[str, ...] = ()
    snapshot_ids: tuple[str, ...] = ()  # of a snapshot job that succeeded, one per disk
    error_code: str = ""
    error_reason: str = ""
    error_message: str = ""
    retry_after: float = 0.0

    @property
    def error(self) -> str:
        """The agent's error as one line, for the store's job record."""
        parts = [p for p in (self.error_code, self.error_reason) if p]
        head = "/".join(parts) or "failed"
        return f"agent job {self.id}: {head}: {self.error_message}"

    @classmethod
    def from_proto(cls, job: Any) -> AgentJob:
        has_error = job.HasField("error")
        snapshot_ids: tuple[str, ...] = ()
        if job.WhichOneof("result") == "snapshot":
            snapshot_ids = tuple(str(d.snapshot_id) for d in job.snapshot.disks)
        return cls(
            id=str(job.id),
            operation=str(job.operation),
            state=_STATES.get(int(job.state), AgentJobState.RUNNING),
            domain=str(job.domain),
            idempotency_key=str(job.idempotency_key),
            steps=tuple(str(s) for s in job.steps),
            snapshot_ids=snapshot_ids,
            error_code=str(job.error.code) if has_error else "",
            error_reason=str(job.error.reason) if has_error else "",
            error_message=str(job.error.message) if has_error else "",
            retry_after=float(job.error.retry_after_seconds) if has_error else 0.0,
        )
