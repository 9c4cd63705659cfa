"""One claimed job, sent and followed to its end, its result recorded under the leader's
lease: DISPATCHING -> RUNNING when the agent accepts it, then SUCCEEDED, FAILED or CANCELLED.
A transient failure to send puts it back to PENDING after a backoff (the store fails it after
its last attempt); a job that cannot finish by its deadline fails, its agent job cancelled
(unless the agent's job succeeded before the cancel took hold)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from controller.agents import AgentClient, AgentError, AgentJob, AgentJobState, AgentUnavailable
from controller.dispatch.config import DispatchConfig
from controller.dispatch.follow import follow
from controller.dispatch.health import AgentHealth
from controller.dispatch.outcome import Outcome, Result
from controller.dispatch.preflight import Target
from controller.dispatch.request import BadJob, snapshot_request
from controller.store import Job, JobKind, JobState, Lease, LeaseLost, Store

log = logging.getLogger(__name__)

# Called when the agent's job succeeded, before the store's job is recorded SUCCEEDED: to tell
# CloudStack the volumes' new paths. It returns what could not be done (kept as the job's
# note: the job did succeed, and reconcile finds what was not recorded), or None.
OnSucceeded: TypeAlias = Callable[[Lease, Job, AgentJob, Target], Awaitable[str | None]]
AFTER_SUCCESS_MIN = 60.0
CANCEL_GRACE = 60.0  # seconds a job cancelled at its deadline is followed to its end

_FINAL = {
    AgentJobState.SUCCEEDED: (JobState.SUCCEEDED, Result.SUCCEEDED),
    AgentJobState.FAILED: (JobState.FAILED, Result.FAILED),
    AgentJobState.CANCELLED: (JobState.CANCELLED, Result.CANCELLED),
}


@dataclass
class Attempt:
    store: Store
    lease: Lease
    job: Job  # claimed (DISPATCHING) or adopted (DISPATCHING or RUNNING) under `lease`
    target: Target
    client: AgentClient
    health: AgentHealth
    config: DispatchConfig
    leading: Callable[[], Lease | None]
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    on_succeeded: OnSucceeded | None = None

    async def run(self) -> Outcome:
        job = self.job
        # The store's times are the database's: the time left is measured there, then kept
        # on this process's monotonic clock.
        deadline = self.clock() + (job.deadline - job.updated_at).total_seconds()
        if job.state is JobState.RUNNING and job.agent_job_id:
            log.info("job %s: following adopted agent job %s", job.id, job.agent_job_id)
            if self._left(deadline) <= 0:
                return await self._past_deadline(job.agent_job_id)
            try:
                left = self._left(deadline)
                agent_job = await self.client.get_job(job.agent_job_id, timeout=left)
            except AgentError as e:
                if e.transient:  # still RUNNING: followed again on a later pass
                    return self._outcome(Result.ERROR, str(e), job.agent_job_id)
                return await self._finish(JobState.FAILED, Result.FAILED, str(e))
            return await self._follow(agent_job, deadline)
        if self._left(deadline) <= 0:
            return await self._finish(JobState.FAILED, Result.FAILED, "deadline passed before send")
        try:
            sent = await self._send(deadline)
        except BadJob as e:
            return await self._finish(JobState.FAILED, Result.FAILED, str(e))
        except AgentError as e:
            return await self._send_failed(e, deadline)
        if sent is None:
            return self._outcome(Result.LOST, "lease lost before send")
        agent_job = sent
        self.health.answered(self.target.host.id)
        log.info("job %s: agent %s accepted it as %s", job.id, self.client.endpoint, agent_job.id)
        await asyncio.to_thread(self.store.jobs.mark_running, self.lease, job.id, agent_job.id)
        return await self._follow(agent_job, deadline)

    async def _send(self, deadline: float) -> AgentJob | None:
        """The job sent with its idempotency key; None when the lease was lost first."""
        job, domain = self.job, self.target.vm.instance_name
        if job.kind is JobKind.DELETE:
            snapshot_id = job.params.get("snapshot_id", "")
            if not snapshot_id:
                raise BadJob(f"job {job.id}: a delete names no snapshot_id")
            if not self._still_leading():
                return None
            return await self.client.delete_snapshot(
                snapshot_id,
                idempotency_key=job.idempotency_key,
                domain=domain,
                timeout=self._left(deadline),
            )
        if job.kind is JobKind.BACKUP:
            snapshot_id, target = job.params.get("snapshot_id", ""), job.params.get("target", "")
            if not snapshot_id or not target:
                raise BadJob(f"job {job.id}: a backup names no snapshot_id or target")
            if not self._still_leading():
                return None
            return await self.client.backup_snapshot(
                snapshot_id,
                target,
                idempotency_key=job.idempotency_key,
                domain=domain,
                full=job.params.get("full") == "true",
                timeout=self._left(deadline),
            )
        if job.kind is JobKind.BACKUP_DELETE:
            backup_id, target = job.params.get("backup_id", ""), job.params.get("target", "")
            if not backup_id or not target:
                raise BadJob(f"job {job.id}: a backup delete names no backup_id or target")
            if not self._still_leading():
                return None
            return await self.client.delete_backup(
                backup_id,
                target,
                idempotency_key=job.idempotency_key,
                with_descendants=job.params.get("with_descendants") == "true",
                timeout=self._left(deadline),
            )
        request = await snapshot_request(job, self.target, self.client, self._left(deadline))
        if not self._still_leading():
            return None
        return await self.client.create_snapshot(
            request.domain,
            idempotency_key=job.idempotency_key,
            disks=request.disks,
            quiesce=request.quiesce,
            name=request.name,
            rbd_images=request.rbd_images,  # a stopped VM's, on the host preflight chose
            timeout=self._left(deadline),
        )

    def _still_leading(self) -> bool:
        """The store's protocol: check the lease right before sending."""
        leading = self.leading()
        return leading is not None and leading.epoch == self.lease.epoch

    async def _send_failed(self, error: AgentError, deadline: float) -> Outcome:
        job = self.job
        if isinstance(error, AgentUnavailable):
            self.health.failed(self.target.host.id, str(error))
        if not error.transient:
            return await self._finish(JobState.FAILED, Result.FAILED, str(error))
        delay = max(self.config.backoff(job.attempts), error.retry_after or 0.0)
        if delay >= self._left(deadline):
            return await self._finish(
                JobState.FAILED, Result.FAILED, f"deadline: no time left to retry: {error}"
            )
        log.warning(
            "job %s (%s): attempt %d/%d failed (%s); %s",
            job.id,
            self.target.vm.instance_name,
            job.attempts,
            job.max_attempts,
            error,
            f"again in {delay:.1f}s with key {job.idempotency_key}"
            if job.attempts < job.max_attempts
            else "no attempts left",
        )
        requeued = await asyncio.to_thread(
            self.store.jobs.requeue, self.lease, job.id, str(error), delay
        )
        result = Result.FAILED if requeued.state is JobState.FAILED else Result.REQUEUED
        return self._outcome(result, str(error))

    async def _follow(self, agent_job: AgentJob, deadline: float) -> Outcome:
        try:
            ended = await follow(
                self.client,
                agent_job,
                deadline=deadline,
                clock=self.clock,
                sleep=self.sleep,
                backoff=self.config.backoff,
            )
        except AgentError as e:
            return await self._finish(JobState.FAILED, Result.FAILED, str(e), agent_job.id)
        if not ended.state.final:
            return await self._past_deadline(ended.id)
        return await self._ended(ended, deadline)

    async def _ended(self, ended: AgentJob, deadline: float) -> Outcome:
        state, result = _FINAL[ended.state]
        if state is not JobState.SUCCEEDED:
            return await self._finish(state, result, ended.error, ended.id)
        note = None
        if self.on_succeeded is not None:
            note = await self._after_success(ended, deadline)
        return await self._finish(state, result, note, ended.id)

    async def _after_success(self, ended: AgentJob, deadline: float) -> str | None:
        """Before the job is recorded SUCCEEDED (so that whoever waits for it finds CloudStack
        told), within the job's deadline or AFTER_SUCCESS_MIN seconds. What could not be done
        is kept as the job's note. LeaseLost propagates: the next leader adopts the job and
        does this again."""
        assert self.on_succeeded is not None
        timeout = max(self._left(deadline), AFTER_SUCCESS_MIN)
        try:
            return await asyncio.wait_for(
                self.on_succeeded(self.lease, self.job, ended, self.target), timeout
            )
        except LeaseLost:
            raise
        except Exception as e:
            log.exception("job %s: succeeded, but what follows from it failed", self.job.id)
            return f"succeeded; what follows failed: {type(e).__name__}: {e}"

    async def _past_deadline(self, agent_job_id: str) -> Outcome:
        """The agent's job is cancelled and followed a little longer: it may have succeeded
        before the cancel reached a safe point, and is then recorded as such."""
        log.info("job %s: cancelling agent job %s past the deadline", self.job.id, agent_job_id)
        try:
            await self.client.cancel_job(agent_job_id)
            ended = await follow(
                self.client,
                await self.client.get_job(agent_job_id),
                deadline=self.clock() + CANCEL_GRACE,
                clock=self.clock,
                sleep=self.sleep,
                backoff=self.config.backoff,
            )
        except AgentError as e:
            return await self._finish(
                JobState.FAILED,
                Result.FAILED,
                f"deadline passed; agent job {agent_job_id} cancelled, its end unknown: {e}",
            )
        if ended.state is AgentJobState.SUCCEEDED:
            return await self._ended(ended, self.clock())
        return await self._finish(
            JobState.FAILED,
            Result.FAILED,
            f"deadline passed; agent job {agent_job_id} cancelled ({ended.state.value})",
        )

    async def _finish(
        self, state: JobState, result: Result, error: str | None, agent_job_id: str | None = None
    ) -> Outcome:
        log.info("job %s: %s%s", self.job.id, state, f": {error}" if error else "")
        await asyncio.to_thread(self.store.jobs.finish, self.lease, self.job.id, state, error)
        return self._outcome(result, error or "", agent_job_id)

    def _outcome(self, result: Result, detail: str, agent_job_id: str | None = None) -> Outcome:
        return Outcome(self.job.id, result, detail, self.target.host.id, agent_job_id)

    def _left(self, deadline: float) -> float:
        return deadline - self.clock()
