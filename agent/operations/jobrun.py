"""Runs an operation as a journalled job: idempotency key, volume locks, and a final state
that tells the truth (succeeded with its result, or failed with the underlying error)."""

from __future__ import annotations

import dataclasses
import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent import errors
from agent.errors import Cancelled, Conflict, HostsnapError, OperationFailed
from agent.jobs import Job, JobState
from agent.operations.services import Services

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class JobSpec:
    operation: str
    domain: str
    volumes: list[str]
    request: dict[str, Any]
    # The group hold whose domain lock the job works under (a group member's snapshot).
    lent_by: str | None = None


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def run(
    svc: Services,
    spec: JobSpec,
    idempotency_key: str | None,
    body: Callable[[str], R],
    from_dict: Callable[[dict[str, Any]], R],
    on_started: Callable[[str], None] | None = None,
) -> R:
    """Runs `body` as a journalled job. `on_started` is told the job id once the job is in
    the journal (or the earlier job of the same idempotency key), before the body runs."""
    job_id = uuid.uuid4().hex
    # The domain too: jobs on two disks of one domain would each rewrite its definition.
    # A job without a domain (RBD images by name) holds its volumes only.
    keys = [f"domain {spec.domain}"] if spec.domain else []
    keys += spec.volumes
    with svc.locks.hold(keys, job_id, spec.operation, spec.lent_by):
        job, created = svc.journal.start(
            job_id, spec.operation, spec.domain, to_json(spec.request), idempotency_key
        )
        if on_started is not None:
            on_started(job.id)
        if not created:
            return replay(job, from_dict)
        log.info("job %s: %s of %s started", job_id, spec.operation, _subject(spec))
        started_at = svc.monotonic()
        result_label = "failed"
        try:
            result = body(job_id)
            result_label = "succeeded"
        except Cancelled as e:
            result_label = "cancelled"
            log.warning("job %s: %s cancelled: %s", job_id, spec.operation, e)
            reason = svc.cancellations.why(job_id) or e.reason
            svc.journal.fail(job_id, str(e), reason, "Cancelled", JobState.CANCELLED)
            raise
        except HostsnapError as e:
            log.error("job %s: %s failed: %s", job_id, spec.operation, e)
            svc.journal.fail(job_id, str(e), e.reason, type(e).__name__)
            raise
        except BaseException as e:
            log.exception("job %s: %s failed unexpectedly", job_id, spec.operation)
            svc.journal.fail(job_id, f"{type(e).__name__}: {e}", "INTERNAL", "OperationFailed")
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt, SystemExit: recorded, then on their way
            raise OperationFailed(f"{spec.operation} failed: {type(e).__name__}: {e}") from e
        finally:
            svc.cancellations.forget(job_id)
            svc.observe_job(spec.operation, result_label, svc.monotonic() - started_at)
        svc.journal.succeed(job_id, to_json(result))
        log.info("job %s: %s of %s succeeded", job_id, spec.operation, _subject(spec))
        return result


def _subject(spec: JobSpec) -> str:
    return spec.domain or ", ".join(spec.volumes)


def earlier(
    svc: Services,
    operation: str,
    domain: str,
    idempotency_key: str | None,
    from_dict: Callable[[dict[str, Any]], R],
    on_started: Callable[[str], None] | None = None,
) -> Callable[[], R] | None:
    """The answer to a request whose idempotency key an earlier job has (its result, its
    error, or Conflict while it runs; `on_started` told its id), to be given before any check
    of the request: the world may have moved on since (a group hold ended, the domain
    stopped), and the caller must still learn what its first request did. None when the key
    is new, or free again because its job was refused before changing anything."""
    if idempotency_key is None:
        return None
    job = svc.journal.by_key(idempotency_key, operation, domain)
    if job is None:
        return None

    def answer() -> R:
        log.info("job %s: %s of %s asked again with its idempotency key", job.id, operation, domain)
        if on_started is not None:
            on_started(job.id)
        return replay(job, from_dict)

    return answer


def checkpoint(svc: Services, job_id: str, step: str) -> None:
    """A safe point: a job asked to stop stops here, before `step` changes anything."""
    if svc.cancellations.requested(job_id):
        raise Cancelled(f"cancelled before {step}; nothing of that step was done")


def replay(job: Job, from_dict: Callable[[dict[str, Any]], R]) -> R:
    """The outcome of an earlier job with the same idempotency key."""
    if job.state == JobState.SUCCEEDED:
        assert job.result is not None
        return from_dict(job.result)
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        error = errors.by_name(job.error_type)
        raise error(job.error or "failed", reason=job.error_reason or "INTERNAL")
    raise Conflict(f"job {job.id} with this idempotency key is still running")


class ProgressReporter:
    """Writes a job's progress when it moved by a percent or more: `share` of the job from
    `start` on is the step reporting."""

    def __init__(self, svc: Services, job_id: str) -> None:
        self._svc = svc
        self._job_id = job_id
        self._written = -1.0

    def part(self, start: float, share: float) -> Callable[[float], None]:
        return lambda fraction: self(start + share * min(max(fraction, 0.0), 1.0))

    def __call__(self, fraction: float) -> None:
        if abs(fraction - self._written) >= 0.01:
            self._written = fraction
            self._svc.journal.set_progress(self._job_id, fraction)
