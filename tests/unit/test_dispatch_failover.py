"""The dispatcher after a failover and around CloudStack: jobs an earlier leader left in flight
are sent again with their key or followed, never made twice; CloudStack is read again right
before acting, and not acted on when it cannot be read."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from controller.agents import AgentClient
from controller.cloudstack import CloudStackTransportError
from controller.dispatch import DispatchConfig, Result
from controller.inventory import InventorySnapshot
from controller.store import JobState
from tests.unit.dispatch_support import FAST, DispatchZone

T = TypeVar("T")


def in_zone(
    tmp_path: Path, test: Callable[[DispatchZone], Awaitable[T]], config: DispatchConfig = FAST
) -> T:
    async def main() -> T:
        async with DispatchZone(tmp_path, ("kvm-1", "kvm-2"), config) as zone:
            return await test(zone)

    return asyncio.run(main())


def take_over(zone: DispatchZone) -> None:
    """The leader goes; another controller leads with the next epoch."""
    assert zone.lease is not None
    zone.store.leases.release(zone.lease)
    zone.lease = zone.store.leases.acquire("controller", "successor", duration=120)


def test_a_job_an_earlier_leader_left_dispatching_is_sent_again_with_its_key(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        job = zone.job("web-1")
        assert zone.lease is not None
        zone.store.jobs.claim(zone.lease, job.id)  # then it died, before or after sending
        take_over(zone)

        (outcome,) = await zone.once()

        assert outcome.result is Result.SUCCEEDED
        done = zone.store.jobs.get(job.id)
        assert zone.lease is not None
        assert (done.state, done.epoch) == (JobState.SUCCEEDED, zone.lease.epoch)
        assert [s.key for s in zone.agents["kvm-1"].sends] == [job.idempotency_key]

    in_zone(tmp_path, test)


def test_a_job_an_earlier_leader_left_running_is_followed_and_not_sent_again(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.job_seconds = 0.02
        job = zone.job("web-1")
        assert zone.lease is not None
        zone.store.jobs.claim(zone.lease, job.id)
        client = AgentClient(zone.servers.endpoints["kvm-1"], None)
        sent = await client.create_snapshot("i-web-1", idempotency_key=job.idempotency_key)
        await client.close()
        zone.store.jobs.mark_running(zone.lease, job.id, sent.id)
        take_over(zone)

        (outcome,) = await zone.once()

        assert (outcome.result, outcome.agent_job_id) == (Result.SUCCEEDED, sent.id)
        assert zone.store.jobs.get(job.id).state is JobState.SUCCEEDED
        assert agent.calls["CreateSnapshot"] == 1  # the earlier leader's send only

    in_zone(tmp_path, test)


def test_a_volume_that_turns_busy_while_its_job_waits_for_the_host_is_not_acted_on(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.inventory.add_vm("web-2", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.job_seconds = 0.05
        jobs = {"i-web-1": zone.job("web-1"), "i-web-2": zone.job("web-2")}

        running = asyncio.create_task(zone.once())
        while not agent.sends:  # one job holds the host, the other waits for it
            await asyncio.sleep(0.001)
        first = agent.sends[0].domain
        (other,) = set(jobs) - {first}
        zone.inventory.set_volume(f"{other[2:]}-root", "Resizing")
        outcomes = {o.job_id: o for o in await running}

        assert outcomes[jobs[first].id].result is Result.SUCCEEDED
        assert outcomes[jobs[other].id].result is Result.SKIPPED
        assert f"{other[2:]}-root is Resizing" in outcomes[jobs[other].id].detail
        assert [s.domain for s in agent.sends] == [first]

    in_zone(tmp_path, test)


def test_nothing_is_sent_when_cloudstack_cannot_be_read(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        job = zone.job("web-1")

        async def unreachable() -> InventorySnapshot:
            raise CloudStackTransportError("connection refused", sent=False)

        zone.inventory.refresh = unreachable  # type: ignore[method-assign]
        (outcome,) = await zone.once()

        assert (outcome.result, outcome.detail) == (Result.ERROR, "connection refused")
        assert zone.store.jobs.get(job.id).state is JobState.PENDING
        assert zone.agents["kvm-1"].sends == []

    in_zone(tmp_path, test)


def test_one_read_of_cloudstack_serves_the_jobs_that_start_together(tmp_path):
    async def test(zone: DispatchZone) -> None:
        for i in range(3):
            zone.inventory.add_vm(f"web-{i}", "kvm-2")
            zone.job(f"web-{i}")

        outcomes = await zone.once()

        assert [o.result for o in outcomes] == [Result.SUCCEEDED] * 3
        assert zone.inventory.refreshes == 1

    in_zone(tmp_path, test, dataclasses.replace(FAST, fresh_within=60.0))


def test_an_adopted_running_job_past_its_deadline_is_cancelled_on_the_agent_and_failed(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.hang = True
        job = zone.job("web-1", timeout=0.02)
        assert zone.lease is not None
        zone.store.jobs.claim(zone.lease, job.id)
        client = AgentClient(zone.servers.endpoints["kvm-1"], None)
        sent = await client.create_snapshot("i-web-1", idempotency_key=job.idempotency_key)
        await client.close()
        zone.store.jobs.mark_running(zone.lease, job.id, sent.id)
        await asyncio.sleep(0.03)  # the leader died; its successor comes after the deadline
        take_over(zone)

        (outcome,) = await zone.once()

        assert outcome.result is Result.FAILED
        assert zone.store.jobs.get(job.id).state is JobState.FAILED
        assert agent.cancelled == [sent.id]

    in_zone(tmp_path, test)
