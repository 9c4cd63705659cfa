"""What one dispatch of one job came to, for logs, status and tests."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Result(enum.Enum):
    SUCCEEDED = "succeeded"  # the agent's job succeeded and the store job is SUCCEEDED
    FAILED = "failed"  # the store job is FAILED (agent failure, refusal, deadline, attempts)
    CANCELLED = "cancelled"  # the agent's job was cancelled
    REQUEUED = "requeued"  # a transient failure: PENDING again after a backoff
    SKIPPED = "skipped"  # not sent: busy, host not Up/Enabled, agent unhealthy (reason kept)
    NOT_CLAIMED = "not-claimed"  # another worker or controller had it, or it was not due
    LOST = "lost"  # the lease was lost (or another epoch took the job): we stopped acting
    ERROR = "error"  # the store or CloudStack could not be read: the job stays as it was


@dataclass(frozen=True)
class Outcome:
    job_id: str
    result: Result
    detail: str = ""
    host_id: str | None = None
    agent_job_id: str | None = None
