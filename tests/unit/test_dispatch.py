"""The dispatcher against fake agents speaking the real proto over grpc.aio on localhost: where
each job goes, the limits, the checks against CloudStack right before acting, retries with the
same idempotency key, deadlines and agent health."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from controller.agents import AgentClient
from controller.dispatch import DispatchConfig, Result, Target
from controller.dispatch.request import PoolsUnknown, snapshot_request
from controller.inventory import Volume
from controller.store import JobKind, JobSpec, JobState
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.unit.dispatch_support import FAST, ZONE, DispatchZone

T = TypeVar("T")


def in_zone(
    tmp_path: Path,
    test: Callable[[DispatchZone], Awaitable[T]],
    hosts: tuple[str, ...] = ("kvm-1", "kvm-2"),
    config: DispatchConfig = FAST,
) -> T:
    async def main() -> T:
        async with DispatchZone(tmp_path, hosts, config) as zone:
            return await test(zone)

    return asyncio.run(main())


def test_a_snapshot_job_goes_to_the_agent_of_the_vms_host_with_its_key_and_ends_succeeded(
    tmp_path,
):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-2")
        job = zone.job("web-1", params={"quiesce": "required", "name": "nightly"})

        (outcome,) = await zone.once()

        assert (outcome.result, outcome.host_id) == (Result.SUCCEEDED, "kvm-2")
        (send,) = zone.agents["kvm-2"].sends
        assert (send.key, send.domain, send.quiesce) == (
            job.idempotency_key,
            "i-web-1",
            pb.QUIESCE_REQUIRED,
        )
        assert zone.agents["kvm-1"].sends == []
        done = zone.store.jobs.get(job.id)
        assert (done.state, done.agent_job_id) == (JobState.SUCCEEDED, outcome.agent_job_id)
        assert done.agent_job_id in zone.agents["kvm-2"].jobs

    in_zone(tmp_path, test)


def test_never_two_mutating_jobs_on_one_host_at_once_while_hosts_work_in_parallel(tmp_path):
    async def test(zone: DispatchZone) -> None:
        for i in range(4):
            zone.inventory.add_vm(f"a-{i}", "kvm-1", pool=f"nfs-{i % 2 + 1}")
            zone.inventory.add_vm(f"b-{i}", "kvm-2", pool=f"nfs-{i % 2 + 1}")
            zone.job(f"a-{i}")
            zone.job(f"b-{i}")
        for agent in zone.agents.values():
            agent.job_seconds = 0.02

        outcomes = await zone.once()

        assert [o.result for o in outcomes] == [Result.SUCCEEDED] * 8
        assert [a.most_running for a in zone.agents.values()] == [1, 1]
        assert all(len(a.sends) == 4 for a in zone.agents.values())

    in_zone(tmp_path, test)


def test_the_pool_limit_holds_across_hosts_and_the_total_limit_across_pools(tmp_path):
    running: list[int] = []

    async def test(zone: DispatchZone) -> None:
        for name in ("kvm-1", "kvm-2", "kvm-3"):
            zone.agents[name].job_seconds = 0.02
        for host in ("kvm-1", "kvm-2", "kvm-3"):
            for i in range(2):
                zone.inventory.add_vm(f"{host}-{i}", host, pool="nfs-1")
                zone.job(f"{host}-{i}")

        async def watch() -> None:
            while True:
                running.append(sum(a.running for a in zone.agents.values()))
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        outcomes = await zone.once()
        watcher.cancel()

        assert [o.result for o in outcomes] == [Result.SUCCEEDED] * 6

    config = dataclasses.replace(FAST, per_host=2, per_pool=2, total=2)
    in_zone(tmp_path, test, hosts=("kvm-1", "kvm-2", "kvm-3"), config=config)
    assert max(running) == 2


def test_a_job_on_a_volume_cloudstack_shows_busy_is_skipped_with_the_reason_and_not_sent(
    tmp_path,
):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.inventory.set_volume("web-1-root", "Migrating")
        job = zone.job("web-1")

        (outcome,) = await zone.once()

        assert outcome.result is Result.SKIPPED
        assert "web-1-root is Migrating" in outcome.detail
        held = zone.store.jobs.get(job.id)
        assert (held.state, held.attempts, held.error) == (JobState.PENDING, 0, outcome.detail)
        assert zone.agents["kvm-1"].sends == []

        zone.inventory.set_volume("web-1-root", "Ready")
        (outcome,) = await zone.once()
        assert outcome.result is Result.SUCCEEDED

    in_zone(tmp_path, test)


def test_a_vm_cloudstack_shows_migrating_is_not_acted_on(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1", state="Migrating")
        job = zone.job("web-1")

        (outcome,) = await zone.once()

        assert (outcome.result, outcome.detail) == (
            Result.SKIPPED,
            "VM web-1 is Migrating in CloudStack",
        )
        assert zone.store.jobs.get(job.id).state is JobState.PENDING
        assert zone.agents["kvm-1"].sends == []

    in_zone(tmp_path, test)


def test_jobs_on_hosts_not_up_and_enabled_are_skipped_and_not_sent(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.inventory.add_vm("web-2", "kvm-2")
        zone.inventory.set_host("kvm-1", "Disconnected")
        zone.inventory.set_host("kvm-2", "Up", "Maintenance")
        zone.job("web-1")
        zone.job("web-2")

        outcomes = await zone.once()

        assert sorted(o.detail for o in outcomes) == [
            "host kvm-1 is Disconnected/Enabled, not Up/Enabled",
            "host kvm-2 is Up/Maintenance, not Up/Enabled",
        ]
        assert all(o.result is Result.SKIPPED for o in outcomes)
        assert [len(a.sends) for a in zone.agents.values()] == [0, 0]

    in_zone(tmp_path, test)


def test_a_stopped_vm_on_rbd_goes_to_a_usable_agent_and_one_on_files_is_skipped(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("ceph-vm", None, pool="rbd-1", state="Stopped")
        zone.inventory.add_vm("file-vm", None, pool="nfs-1", state="Stopped")
        zone.inventory.set_host("kvm-1", "Up", "Disabled")
        zone.job("ceph-vm")
        zone.job("file-vm")

        ceph, files = await zone.once()

        assert (ceph.result, ceph.host_id) == (Result.SUCCEEDED, "kvm-2")
        assert files.result is Result.SKIPPED and "not all its volumes are on RBD" in files.detail

    in_zone(tmp_path, test)


def test_a_stopped_rbd_vms_job_goes_out_as_an_image_snapshot_of_its_volumes(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("ceph-vm", None, pool="rbd-1", state="Stopped")
        data = "0b8a1a4e-5d6c-4c1e-9a57-3f2f0c6d7e11"
        zone.inventory.volumes[data] = Volume(
            data, "data", "DATADISK", "Ready", "ceph-vm", 1, "rbd-1", "rbd-1", data, None, 1, ZONE
        )
        zone.inventory.add_vm("ceph-run", "kvm-1", pool="rbd-1")  # running: unchanged
        stopped = zone.job("ceph-vm", params={"quiesce": "preferred", "name": "nightly"})
        running = zone.job("ceph-run")

        outcomes = {o.job_id: o for o in await zone.once()}

        assert outcomes[stopped.id].result is Result.SUCCEEDED
        sends = {s.key: s for a in zone.agents.values() for s in a.sends}
        image_send = sends[stopped.idempotency_key]
        # The Ceph pool is the pool's `path` ("rbd"), the image the volume's `path`.
        assert image_send.rbd_images == ("rbd/ceph-vm-root.qcow2", f"rbd/{data}")
        assert (image_send.domain, image_send.disks) == ("", ())
        assert image_send.quiesce == pb.QUIESCE_PREFERRED
        run_send = sends[running.idempotency_key]
        assert (run_send.domain, run_send.rbd_images) == ("i-ceph-run", ())
        done = zone.store.jobs.get(stopped.id)
        assert done.state is JobState.SUCCEEDED
        agent = zone.agents[outcomes[stopped.id].host_id or ""]
        result = agent.jobs[done.agent_job_id or ""].snapshot
        assert [d.active_image for d in result.disks] == list(image_send.rbd_images)

    in_zone(tmp_path, test)


def test_a_job_for_one_volume_of_a_stopped_rbd_vm_names_only_its_image(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("ceph-vm", None, pool="rbd-1", state="Stopped")
        data = "data-image"
        zone.inventory.volumes[data] = Volume(
            data, "data", "DATADISK", "Ready", "ceph-vm", 1, "rbd-1", "rbd-1", data, None, 1, ZONE
        )
        zone.store.jobs.create(JobSpec(JobKind.SNAPSHOT, "kvm-1", vm_id="ceph-vm", volume_id=data))

        (outcome,) = await zone.once()

        assert outcome.result is Result.SUCCEEDED
        (send,) = zone.agents[outcome.host_id or ""].sends
        assert send.rbd_images == ("rbd/data-image",)
        assert all(a.calls["ListVolumes"] == 0 for a in zone.agents.values())

    in_zone(tmp_path, test)


def test_a_stopped_vms_job_adopted_without_its_pools_is_sent_again_not_failed(tmp_path):
    async def test(zone: DispatchZone) -> None:
        vm = zone.inventory.add_vm("ceph-vm", None, pool="rbd-1", state="Stopped")
        job = zone.job("ceph-vm")
        host = zone.inventory.hosts["kvm-1"]
        volumes = tuple(v for v in zone.inventory.volumes.values() if v.vm_id == vm.id)
        client = AgentClient("127.0.0.1:1", None)

        with pytest.raises(PoolsUnknown) as caught:  # a new leader's Target: no pools
            await snapshot_request(job, Target(host, vm, volumes), client, 1.0)
        assert caught.value.transient

        pools = (zone.inventory.pools["rbd-1"],)
        request = await snapshot_request(job, Target(host, vm, volumes, pools), client, 1.0)
        assert request.rbd_images == ("rbd/ceph-vm-root.qcow2",)

    in_zone(tmp_path, test)


def test_a_lost_reply_is_sent_again_with_the_same_key_and_the_agent_runs_one_job(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.lose_replies = 1  # the agent made the job, its answer never arrived
        job = zone.job("web-1")

        outcomes = await zone.settle()

        results = [o.result for o in outcomes if o.result is not Result.NOT_CLAIMED]
        assert results == [Result.REQUEUED, Result.SUCCEEDED]
        assert [s.key for s in agent.sends] == [job.idempotency_key] * 2
        assert len(agent.jobs) == 1
        done = zone.store.jobs.get(job.id)
        assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)
        assert done.agent_job_id == agent.by_key[job.idempotency_key]

    in_zone(tmp_path, test)


def test_an_agent_busy_with_the_volume_is_retried_after_a_backoff(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].refuse = [grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED]
        job = zone.job("web-1")

        await zone.settle()

        assert zone.store.jobs.get(job.id).state is JobState.SUCCEEDED
        assert len(zone.agents["kvm-1"].sends) == 3

    in_zone(tmp_path, test)


def test_transient_failures_past_the_jobs_attempts_fail_it_with_the_last_error(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].lose_replies = 5
        job = zone.job("web-1", max_attempts=2)

        await zone.settle()

        failed = zone.store.jobs.get(job.id)
        assert (failed.state, failed.attempts) == (JobState.FAILED, 2)
        assert "UNAVAILABLE: reply lost" in (failed.error or "")

    in_zone(tmp_path, test)


def test_a_permanent_refusal_fails_the_job_at_once_with_the_agents_reason(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].refuse = [grpc.StatusCode.FAILED_PRECONDITION]
        job = zone.job("web-1")

        (outcome,) = await zone.once()

        assert outcome.result is Result.FAILED
        failed = zone.store.jobs.get(job.id)
        assert (failed.state, failed.attempts) == (JobState.FAILED, 1)
        assert "FAILED_PRECONDITION" in (failed.error or "")
        assert len(zone.agents["kvm-1"].sends) == 1

    in_zone(tmp_path, test)


def test_an_agent_job_that_fails_fails_the_store_job_with_the_agents_error(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].outcome = "failed"
        job = zone.job("web-1")

        (outcome,) = await zone.once()

        assert outcome.result is Result.FAILED
        assert "INTERNAL/RBD_FAILED: rbd said no" in (zone.store.jobs.get(job.id).error or "")

    in_zone(tmp_path, test)


def test_a_job_that_runs_past_its_deadline_fails_and_its_agent_job_is_cancelled(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.hang = True
        job = zone.job("web-1", timeout=0.3)

        (outcome,) = await zone.once()

        assert outcome.result is Result.FAILED
        failed = zone.store.jobs.get(job.id)
        assert failed.state is JobState.FAILED and "deadline passed" in (failed.error or "")
        assert agent.cancelled == [failed.agent_job_id]

    in_zone(tmp_path, test)


def test_a_job_that_succeeds_although_cancelled_at_its_deadline_is_recorded_succeeded(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        agent = zone.agents["kvm-1"]
        agent.hang = agent.cancel_too_late = True
        job = zone.job("web-1", timeout=0.3)

        (outcome,) = await zone.once()

        assert outcome.result is Result.SUCCEEDED
        done = zone.store.jobs.get(job.id)
        assert (done.state, done.error) == (JobState.SUCCEEDED, None)
        assert agent.cancelled == [done.agent_job_id]

    in_zone(tmp_path, test)


def test_an_agent_failing_health_checks_gets_no_work_until_it_answers_again(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.inventory.add_vm("web-2", "kvm-2")
        agent = zone.agents["kvm-1"]
        agent.down = True
        sick, well = zone.job("web-1"), zone.job("web-2")

        outcomes = {o.job_id: o for o in await zone.once()}

        assert outcomes[sick.id].result is Result.SKIPPED
        assert "agent of host kvm-1 fails its health check" in outcomes[sick.id].detail
        assert outcomes[well.id].result is Result.SUCCEEDED
        assert agent.calls["CreateSnapshot"] == 0
        assert zone.store.jobs.get(sick.id).state is JobState.PENDING

        agent.down = False
        (outcome,) = await zone.once()
        assert outcome.result is Result.SUCCEEDED
        assert agent.calls["GetHostInfo"] >= 2

    in_zone(tmp_path, test)


def test_an_agent_unreachable_at_send_is_marked_unhealthy(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].refuse = [grpc.StatusCode.UNAVAILABLE]
        zone.job("web-1")
        assert zone.dispatcher is not None

        (outcome,) = await zone.once()

        assert outcome.result is Result.REQUEUED
        assert zone.dispatcher.health.of("kvm-1").healthy is False

    in_zone(tmp_path, test)


def test_a_controller_that_lost_its_lease_sends_nothing(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        job = zone.job("web-1")
        zone.lease = None

        assert await zone.once() == []
        assert zone.agents["kvm-1"].sends == []
        assert zone.store.jobs.get(job.id).state is JobState.PENDING

    in_zone(tmp_path, test)


def test_a_job_for_one_volume_snapshots_the_disk_the_agent_lists_for_it(tmp_path):
    async def test(zone: DispatchZone) -> None:
        zone.inventory.add_vm("web-1", "kvm-1")
        zone.agents["kvm-1"].volumes["i-web-1"] = [
            ("vda", f"/mnt/nfs-1/web-1-root.qcow2.hostsnap-{'a' * 32}"),
            ("vdb", "/mnt/nfs-1/web-1-data.qcow2"),
        ]
        zone.store.jobs.create(
            JobSpec(
                JobKind.SNAPSHOT,
                "kvm-1",
                vm_id="web-1",
                volume_id="web-1-root",
            )
        )

        (outcome,) = await zone.once()

        assert outcome.result is Result.SUCCEEDED
        assert zone.agents["kvm-1"].sends[0].disks == ("vda",)

    in_zone(tmp_path, test)


def test_run_dispatches_jobs_created_while_it_runs_and_stops_when_asked(tmp_path):
    async def test(zone: DispatchZone) -> None:
        assert zone.dispatcher is not None
        zone.inventory.add_vm("web-1", "kvm-1")
        stop = asyncio.Event()
        running = asyncio.create_task(zone.dispatcher.run(stop))
        job = zone.job("web-1")

        while not zone.store.jobs.get(job.id).state.final:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(running, timeout=5)

        assert zone.store.jobs.get(job.id).state is JobState.SUCCEEDED

    in_zone(tmp_path, test)
