"""`hostsnap-controller serve`: the leader election, CloudStack's inventory, the policy
runner, the dispatcher and the reconcile pass, each a loop until stopped. Only the leader
acts; a follower keeps trying to take the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from controller import reconcile
from controller.agents import AgentJob
from controller.cloudstack import CloudStackError
from controller.dispatch import DispatchConfig, Dispatcher, Target
from controller.parts import Parts
from controller.runner import PolicyRunner
from controller.runner.backup_retention import backup_retention_jobs
from controller.runner.backups import backups_of
from controller.runner.facts import read_caps, read_facts
from controller.runner.retention import retention_jobs
from controller.store import Job, JobKind, LeaderElection, Lease, RunState, StoreError

log = logging.getLogger(__name__)


class Service:
    def __init__(self, parts: Parts, *, holder: str | None = None) -> None:
        self.parts = parts
        settings = parts.settings
        self.election = LeaderElection(parts.store.leases, parts.lease_config(), holder=holder)
        self.runner = PolicyRunner(parts.store, job_timeout=settings.schedule.job_timeout)
        limits = settings.dispatch
        self.dispatcher = Dispatcher(
            parts.store,
            parts.inventory,
            parts.agents,
            self.election.leader,
            DispatchConfig(
                per_host=limits.per_host,
                per_pool=limits.per_pool,
                total=limits.total,
                poll_interval=limits.poll_interval,
                call_timeout=settings.agents.call_timeout,
            ),
            on_succeeded=self._snapshot_succeeded,
        )

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.parts.settings
        log.info("controller %s starting", self.election.holder)
        loops = [
            self.election.run(stop),
            self.parts.inventory.run(stop),
            self.dispatcher.run(stop),
            self._every(settings.schedule.policy_interval, self.policy_pass, stop),
        ]
        if settings.reconcile.interval > 0:
            loops.append(self._every(settings.reconcile.interval, self.reconcile_pass, stop))
        await asyncio.gather(*loops)
        log.info("controller %s stopped", self.election.holder)

    async def _every(
        self,
        interval: float,
        step: Callable[[Lease], Awaitable[object]],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            lease = self.election.leader()
            if lease is not None:
                try:
                    await step(lease)
                except (StoreError, CloudStackError) as e:
                    log.warning("%s: %s", step.__name__, e)
                except Exception:
                    log.exception("%s failed", step.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def policy_pass(self, lease: Lease) -> None:
        """Starts the runs that are due and ends those whose jobs have ended."""
        inventory = await self.parts.inventory.refresh()
        chosen, problems = await asyncio.to_thread(self.runner.stored_policies)
        for problem in problems:
            log.warning("%s", problem)
        facts = await read_facts(self.parts.cloudstack, chosen)
        caps = await read_caps(self.parts.cloudstack)  # unreadable: no run starts or ends now
        plan = await asyncio.to_thread(self.runner.plan, inventory, datetime.now(UTC), facts, caps)
        await asyncio.to_thread(self.runner.start_due, plan, inventory)
        ended = await asyncio.to_thread(self.runner.finish_ended, lease)
        by_id = {p.id: p for p in chosen}
        for run in ended:
            if run.state is not RunState.FAILED and run.policy_id in by_id:
                await retention_jobs(
                    self.parts.store, self.parts.agents, inventory, by_id[run.policy_id], run, caps
                )
                await backup_retention_jobs(
                    self.parts.store, self.parts.agents, inventory, by_id[run.policy_id], run
                )

    async def reconcile_pass(self, lease: Lease) -> reconcile.Report:
        settings = self.parts.settings.reconcile
        report = await reconcile.reconcile(
            store=self.parts.store,
            lease=lease,
            cloudstack=self.parts.cloudstack,
            inventory=await self.parts.inventory.refresh(),
            agents=self.parts.agents,
            fix=settings.fix,
            intents_after=settings.intents_after,
            transitional_after=settings.transitional_after,
            leader=self.election.leader,
        )
        for line in report.problems():
            log.warning("reconcile: %s", line)
        return report

    async def _snapshot_succeeded(
        self, lease: Lease, job: Job, agent_job: AgentJob, target: Target
    ) -> str | None:
        """CloudStack is told the volumes' new active images (and the snapshot's tags) right
        away; what fails is the job's note, and left to the reconcile pass. A policy's
        snapshot that is to be backed up gets its backup jobs."""
        if job.kind in (JobKind.BACKUP, JobKind.BACKUP_DELETE):
            return None  # nothing of CloudStack's changes
        applied = await reconcile.apply_snapshot(
            self.parts.store,
            lease,
            self.parts.cloudstack,
            self.parts.inventory.snapshot,
            job,
            agent_job,
            leader=self.election.leader,
        )
        notes = []
        if applied.errors:
            notes.append("CloudStack was not told: " + "; ".join(applied.errors))
        try:
            agent = self.parts.agents.client(target.host)
            await backups_of(self.parts.store, job, agent_job, target.host.id, agent)
        except StoreError as e:
            notes.append(f"its backups were not queued: {e}")
        return "succeeded, but " + "; ".join(notes) if notes else None
