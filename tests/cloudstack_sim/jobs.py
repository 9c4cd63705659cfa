"""Async jobs as CloudStack runs them: the command answers `{"jobid": ...}` at once, and
queryAsyncJobResult reports `jobstatus` 0 (pending) until the job ends with 1 (succeeded),
2 (failed) or 3 (cancelled), `jobresultcode` and `jobresult`.

A job stays pending for `pending_polls` queries and at least `delay` seconds, then runs its
effect; a failing effect (an ApiError) becomes `jobresult: {errorcode, errortext}`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .world import cs_time


class ApiError(Exception):
    """An error CloudStack reports as {errorcode, cserrorcode, errortext}."""

    def __init__(self, errorcode: int, errortext: str, cserrorcode: int | None = None) -> None:
        super().__init__(errortext)
        self.errorcode = errorcode
        self.errortext = errortext
        self.cserrorcode = cserrorcode


@dataclass(frozen=True)
class ForcedOutcome:
    """Make the next job end this way whatever its command would have done."""

    jobstatus: int  # 2 failed, 3 cancelled
    errorcode: int
    errortext: str


@dataclass
class Job:
    id: str
    cmd_class: str
    instance_type: str
    instance_id: str
    account_id: str
    effect: Callable[[], dict[str, Any]]
    ready_at: float
    polls_to_wait: int
    forced: ForcedOutcome | None = None
    created: str = field(default_factory=lambda: cs_time(datetime.now(UTC)))
    status: int = 0
    result_code: int = 0
    result: dict[str, Any] | None = None
    completed: str | None = None
    polls: int = 0

    def to_api(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "accountid": self.account_id,
            "userid": self.account_id,
            "cmd": self.cmd_class,
            "jobstatus": self.status,
            "jobprocstatus": 0,
            "jobresultcode": self.result_code,
            "jobresulttype": "object",
            "jobinstancetype": self.instance_type,
            "jobinstanceid": self.instance_id,
            "created": self.created,
            "jobid": self.id,
        }
        if self.status != 0:
            record["jobresult"] = self.result
            record["completed"] = self.completed
        return record


class JobQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.pending_polls = 1  # queries answered "pending" before a job may end
        self.delay = 0.0  # seconds a job takes at least
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._forced: list[ForcedOutcome] = []
        self._lock = threading.Lock()

    def force_next(self, outcome: ForcedOutcome) -> None:
        with self._lock:
            self._forced.append(outcome)

    def submit(
        self,
        *,
        cmd_class: str,
        instance_type: str,
        instance_id: str,
        account_id: str,
        effect: Callable[[], dict[str, Any]],
    ) -> str:
        with self._lock:
            job = Job(
                id=str(uuid.uuid4()),
                cmd_class=cmd_class,
                instance_type=instance_type,
                instance_id=instance_id,
                account_id=account_id,
                effect=effect,
                ready_at=self._clock() + self.delay,
                polls_to_wait=self.pending_polls,
                forced=self._forced.pop(0) if self._forced else None,
            )
            self._jobs[job.id] = job
        return job.id

    def query(self, jobid: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(jobid)
            if job is None:
                return None
            if job.status == 0:
                job.polls += 1
                if job.polls > job.polls_to_wait and self._clock() >= job.ready_at:
                    self._finish(job)
            return job

    def _finish(self, job: Job) -> None:
        if job.forced is not None:
            job.status, job.result_code = job.forced.jobstatus, job.forced.errorcode
            job.result = {"errorcode": job.forced.errorcode, "errortext": job.forced.errortext}
        else:
            try:
                job.result = job.effect()
                job.status = 1
            except ApiError as exc:
                job.status, job.result_code = 2, exc.errorcode
                job.result = {"errorcode": exc.errorcode, "errortext": exc.errortext}
        job.completed = cs_time(datetime.now(UTC))
