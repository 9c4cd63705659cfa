"""What the store gives out for runs, jobs, intents and the lease: plain frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some of its jobs failed
    FAILED = "failed"


class JobKind(StrEnum):
    SNAPSHOT = "snapshot"
    REVERT = "revert"
    DELETE = "delete"
    CONSOLIDATE = "consolidate"
    FLATTEN = "flatten"
    BACKUP = "backup"  # a snapshot's, to the agent's backup target (params: snapshot_id, target)
    BACKUP_DELETE = "backup-delete"  # params: backup_id, target (and the backups over it)


class JobState(StrEnum):
    PENDING = "pending"  # waiting to be claimed (again, after a failed attempt to send it)
    DISPATCHING = "dispatching"  # claimed by a leader epoch; the agent may or may not have it
    RUNNING = "running"  # the agent accepted it: agent_job_id is known
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def in_flight(self) -> bool:
        return self in (JobState.DISPATCHING, JobState.RUNNING)

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class IntentState(StrEnum):
    RECORDED = "recorded"  # before dispatch: the job may change the volume's active image
    CHANGED = "changed"  # the agent reports the new active image; CloudStack not yet told
    APPLIED = "applied"  # CloudStack's volume path was updated (updateVolume)
    ABANDONED = "abandoned"  # the job left the active image as it was

    @property
    def open(self) -> bool:
        return self in (IntentState.RECORDED, IntentState.CHANGED)


@dataclass(frozen=True)
class Run:
    id: str
    policy_id: str
    scheduled_for: datetime  # the schedule's slot this run is for; one run per slot
    state: RunState
    created_at: datetime
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class IntentSpec:
    """A volume whose active image the job may change, and CloudStack's path for it now."""

    volume_id: str
    previous_path: str | None


@dataclass(frozen=True)
class JobSpec:
    kind: JobKind
    host_id: str
    vm_id: str | None = None
    volume_id: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, hash=False)
    run_id: str | None = None
    # Sent to the agent: the same key returns the same agent job. Chosen by the caller when the
    # job must be created once per something (a run and a volume), else made from the job id.
    idempotency_key: str | None = None
    timeout: float = 3600.0  # seconds from creation to the job's deadline
    max_attempts: int = 3  # sends that may fail before the agent accepts the job
    intents: tuple[IntentSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if not self.host_id:
            raise ValueError("a job needs a host")
        if self.timeout <= 0 or self.max_attempts < 1:
            raise ValueError("a job needs a positive timeout and at least one attempt")


@dataclass(frozen=True)
class Job:
    id: str
    run_id: str | None
    kind: JobKind
    host_id: str
    vm_id: str | None
    volume_id: str | None
    params: Mapping[str, str] = field(hash=False)
    idempotency_key: str
    state: JobState
    agent_job_id: str | None
    epoch: int | None  # the leader epoch that claimed it last (its fencing token)
    attempts: int  # claims so far
    max_attempts: int
    not_before: datetime  # not claimed before this (backoff after a failed send)
    deadline: datetime
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Intent:
    id: str
    job_id: str
    volume_id: str
    previous_path: str | None
    new_path: str | None
    state: IntentState
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Lease:
    """Leadership held by `holder` with `epoch` as its fencing token. `valid_until` is on the
    holder's own monotonic clock, earlier than the database's expiry by at least the margin:
    past it the holder must stop acting, whatever it believes."""

    name: str
    holder: str
    epoch: int
    valid_until: float

    def valid_at(self, monotonic_now: float) -> bool:
        return monotonic_now < self.valid_until


@dataclass(frozen=True)
class LeaseInfo:
    """The lease row as the database has it, for status and operators."""

    name: str
    holder: str | None
    epoch: int
    expires_at: datetime
    remaining: float  # seconds until it expires by the database's clock; <= 0 when expired

    @property
    def held(self) -> bool:
        return self.holder is not None and self.remaining > 0
