"""The dispatcher: each pass takes the PENDING jobs, and the in-flight ones of its own epoch
that no task holds (on becoming leader it first adopts those earlier epochs left); it checks
each against a fresh inventory and its agent's health, waits for a place within the limits,
checks again right before acting, claims it under the leader's epoch and sends it
(`attempt`). A job that may not be acted on now is left PENDING with the reason recorded,
and looked at again after `skip_delay`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from controller.agents import AgentPool
from controller.cloudstack import CloudStackError
from controller.dispatch.attempt import Attempt, OnSucceeded
from controller.dispatch.config import DispatchConfig
from controller.dispatch.fresh import FreshInventory, InventorySource
from controller.dispatch.health import AgentHealth
from controller.dispatch.limits import Limits
from controller.dispatch.outcome import Outcome, Result
from controller.dispatch.preflight import ON_ITS_HOST, Skip, Target, check
from controller.store import Job, JobKind, JobState, Lease, LeaseLost, StaleClaim, Store, StoreError

log = logging.getLogger(__name__)

SUPPORTED = frozenset({JobKind.SNAPSHOT, JobKind.DELETE, JobKind.BACKUP, JobKind.BACKUP_DELETE})
IN_FLIGHT = (JobState.DISPATCHING, JobState.RUNNING)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        inventory: InventorySource,
        agents: AgentPool,
        leader: Callable[[], Lease | None],
        config: DispatchConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_succeeded: OnSucceeded | None = None,
    ) -> None:
        self._store = store
        self._on_succeeded = on_succeeded
        self._agents = agents
        self._leader = leader
        self.config = config = config or DispatchConfig()
        self._inventory = FreshInventory(inventory, config.fresh_within, clock)
        self._clock = clock
        self._sleep = sleep
        self.limits = Limits(per_host=config.per_host, per_pool=config.per_pool, total=config.total)
        self.health = AgentHealth(
            interval=config.health_interval, retry=config.health_retry, clock=clock
        )
        self._epoch: int | None = None
        self._active: dict[str, asyncio.Task[Outcome]] = {}
        self._ended_since: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every `poll_interval` seconds until `stop`; jobs run on between passes.
        At the end, the jobs in hand are followed to their end."""
        while not stop.is_set():
            await self._start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.poll_interval)
        await asyncio.gather(*self._active.values(), return_exceptions=True)

    async def run_once(self) -> list[Outcome]:
        """One pass, waiting for every job it started to be done."""
        return list(await asyncio.gather(*await self._start()))

    async def _start(self) -> list[asyncio.Task[Outcome]]:
        lease = self._leader()
        if lease is None:
            return []
        try:
            if lease.epoch != self._epoch:
                await asyncio.to_thread(self._store.jobs.adopt, lease)
                self._epoch = lease.epoch
            # Tasks that end while the store is read may be read as they were before: their
            # jobs are left to the next pass.
            self._ended_since = set()
            # In flight under this epoch and not in hand: adopted just now, or left by a task
            # of ours that could not record its result (the store was unreachable).
            in_flight = await asyncio.to_thread(self._store.jobs.find, states=IN_FLIGHT)
            # Enough to find `batch` jobs not in hand already (they are the oldest).
            limit = self.config.batch + len(self._active)
            pending = await asyncio.to_thread(
                self._store.jobs.find, states=[JobState.PENDING], limit=limit
            )
        except StoreError as e:
            log.warning("dispatch pass stopped: %s", e)
            return []
        ours = [job for job in in_flight if job.epoch == lease.epoch]
        started = []
        for job in [*ours, *pending]:
            fresh = job.id not in self._active and job.id not in self._ended_since
            if job.kind in SUPPORTED and fresh:
                task = asyncio.create_task(self._handle(lease, job), name=f"dispatch {job.id}")
                self._active[job.id] = task
                task.add_done_callback(functools.partial(self._forget, job.id))
                started.append(task)
        return started

    def _forget(self, job_id: str, task: asyncio.Task[Outcome]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
        if self._active.get(job_id) is task:
            del self._active[job_id]
        self._ended_since.add(job_id)

    async def _handle(self, lease: Lease, job: Job) -> Outcome:
        try:
            if job.state is JobState.RUNNING:
                return await self._resume(lease, job)
            found = await self._preflight(job)
            if isinstance(found, Skip):
                return await self._skip(lease, job, found.reason)
            # A backup changes nothing on primary storage: it takes no host's mutating turn
            # (a full backup may run for hours); the agent's admission paces its reads.
            held = (
                contextlib.AsyncExitStack()
                if job.kind in ON_ITS_HOST
                else self.limits.hold(found.host.id, found.pool_ids)
            )
            async with held:
                # Right before acting: CloudStack's state now, not when the job was queued.
                now = await self._preflight(job)
                if isinstance(now, Target) and now.host.id != found.host.id:
                    now = Skip(f"VM {now.vm.name} moved to host {now.host.name}")
                if isinstance(now, Skip):
                    return await self._skip(lease, job, now.reason)
                return await self._send(lease, job, now)
        except (LeaseLost, StaleClaim) as e:
            log.warning("job %s: stopped acting on it: %s", job.id, e)
            return Outcome(job.id, Result.LOST, str(e))
        except (StoreError, CloudStackError) as e:
            log.warning("job %s: left as it is for now: %s", job.id, e)
            return Outcome(job.id, Result.ERROR, str(e))

    async def _resume(self, lease: Lease, job: Job) -> Outcome:
        """A job the agent accepted under an earlier epoch (or before the store went away):
        followed on the agent it was sent to, whatever CloudStack shows now."""
        inventory = await self._inventory.get()
        vm = inventory.vms.get(job.vm_id or "")
        host = inventory.hosts.get((vm.host_id if vm else None) or job.host_id)
        if vm is None or host is None:
            return Outcome(job.id, Result.ERROR, "its VM or host is not in the inventory")
        target = Target(host, vm, inventory.volumes_of(vm.id))
        async with self.limits.hold(host.id, target.pool_ids):
            return await self._send(lease, job, target)

    async def _preflight(self, job: Job) -> Target | Skip:
        inventory = await self._inventory.get()
        found = check(job, inventory, self.health.healthy)
        if isinstance(found, Skip):
            return found
        client = self._agents.client(found.host)
        if not await self.health.ensure(found.host.id, client):
            error = self.health.of(found.host.id).last_error
            return Skip(f"agent of host {found.host.name} fails its health check: {error}")
        return found

    async def _send(self, lease: Lease, job: Job, target: Target) -> Outcome:
        if job.state is JobState.PENDING:
            claimed = await asyncio.to_thread(self._store.jobs.claim, lease, job.id)
            if claimed is None:
                return Outcome(job.id, Result.NOT_CLAIMED, "claimed elsewhere or not due")
            job = claimed
        log.info(
            "job %s: %s of VM %s on host %s (attempt %d/%d, key %s)",
            job.id,
            job.kind,
            target.vm.name,
            target.host.name,
            job.attempts,
            job.max_attempts,
            job.idempotency_key,
        )
        attempt = Attempt(
            store=self._store,
            lease=lease,
            job=job,
            target=target,
            client=self._agents.client(target.host),
            health=self.health,
            config=self.config,
            leading=self._leader,
            clock=self._clock,
            sleep=self._sleep,
            on_succeeded=self._on_succeeded,
        )
        return await attempt.run()

    async def _skip(self, lease: Lease, job: Job, reason: str) -> Outcome:
        log.info("job %s: skipped: %s", job.id, reason)
        if job.state is JobState.PENDING:
            await asyncio.to_thread(
                self._store.jobs.defer, lease, job.id, reason, self.config.skip_delay
            )
        else:  # adopted in flight: back to PENDING, to be sent again with its key
            await asyncio.to_thread(
                self._store.jobs.requeue, lease, job.id, reason, self.config.skip_delay
            )
        return Outcome(job.id, Result.SKIPPED, reason)
