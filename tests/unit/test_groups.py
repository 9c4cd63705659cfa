"""The consistency group coordinator against fake agents speaking the real proto over grpc.aio
on localhost: freeze all, snapshot all, thaw all; a failure of one member thaws every member
and removes the snapshots the others made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
import pytest

from controller.agents import AgentClient
from controller.cli.groups import _record
from controller.groups import (
    GroupConfig,
    GroupInterrupted,
    GroupMember,
    GroupRefused,
    GroupResult,
    snapshot_group,
)
from controller.groups.members import snapshot_key
from controller.groups.model import MemberOutcome
from controller.reconcile.direct import record_snapshot
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.grpc_fake_agent import FakeAgent, FakeAgentServer
from tests.unit.dispatch_support import FakeInventory
from tests.unit.test_reconcile import Lab, both_disks, in_lab, overlay_name

T = TypeVar("T")
FAST = GroupConfig(cleanup_timeout=5.0, thaw_timeout=2.0, backoff_base=0.01, backoff_max=0.02)


@asynccontextmanager
async def agents(*names: str) -> AsyncIterator[dict[str, tuple[FakeAgent, AgentClient]]]:
    servers = FakeAgentServer()
    found = {}
    try:
        for name in names:
            agent = FakeAgent(name)
            endpoint = await servers.start(agent)
            found[name] = (agent, AgentClient(endpoint, None, call_timeout=2.0))
        yield found
    finally:
        await asyncio.gather(*(client.close() for _, client in found.values()))
        await servers.stop()


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(test())  # type: ignore[arg-type]


async def group_of(
    found: dict[str, tuple[FakeAgent, AgentClient]], seconds: float = 5.0, **options: object
) -> GroupResult:
    members = [GroupMember(client, f"i-{name}") for name, (_, client) in found.items()]
    return await snapshot_group(
        members,
        deadline=time.monotonic() + seconds,
        group_id="g-1",
        config=FAST,
        **options,  # type: ignore[arg-type]
    )


def test_a_group_freezes_snapshots_and_thaws_every_member():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            result = await group_of(found)
            assert result.succeeded, result.error
            for member, (agent, _) in zip(result.members, found.values(), strict=True):
                assert (member.frozen, member.thawed, member.errors) == (True, True, ())
                assert len(member.snapshot_ids) == 1 and member.removed_ids == ()
                assert member.snapshot_state == "succeeded"
                assert agent.calls["CreateSnapshot"] == 1 and agent.frozen == set()
                assert agent.holds == {} and agent.deleted == []
            assert result.all_thawed and result.leftovers == ()

    run(test)


def test_members_on_one_agent_are_each_frozen_and_snapshotted():
    async def test() -> None:
        async with agents("kvm-1") as found:
            agent, client = found["kvm-1"]
            members = [GroupMember(client, "i-a"), GroupMember(client, "i-b", disks=("vda",))]
            result = await snapshot_group(
                members, deadline=time.monotonic() + 5, group_id="g-2", config=FAST
            )
            assert result.succeeded, result.error
            assert {s.domain for s in agent.sends} == {"i-a", "i-b"}
            assert agent.calls["FreezeForGroup"] == 2 and agent.calls["ThawGroup"] == 2
            assert agent.frozen == set()

    run(test)


def test_a_freeze_failure_on_one_member_thaws_the_others_and_snapshots_nothing():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            found["kvm-2"][0].refuse_freeze = True
            result = await group_of(found)
            ok, refused = result.members
            assert not result.succeeded and "freeze failed for i-kvm-2" in result.error
            assert (ok.frozen, ok.thawed) == (True, True)
            assert not refused.frozen and "DOMAIN_HELD" in refused.errors[0]
            for agent, _ in found.values():
                assert agent.calls["CreateSnapshot"] == 0 and agent.frozen == set()
                assert agent.thaws  # ThawGroup went to every member a freeze was sent to
            assert result.leftovers == ()

    run(test)


def test_a_snapshot_failure_on_one_member_removes_the_others_snapshots_and_thaws_all():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            found["kvm-2"][0].outcome = "failed"
            result = await group_of(found)
            made, failed = result.members
            assert not result.succeeded and "snapshot failed for i-kvm-2" in result.error
            assert len(made.snapshot_ids) == 1 and made.removed_ids == made.snapshot_ids
            assert found["kvm-1"][0].deleted == list(made.snapshot_ids)
            assert failed.snapshot_ids == () and "rbd said no" in failed.errors[0]
            assert made.thawed and failed.thawed and result.all_thawed
            assert result.leftovers == ()
            assert all(agent.frozen == set() for agent, _ in found.values())

    run(test)


def test_the_deadline_passing_thaws_all_stops_the_late_job_and_removes_the_rest():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            late_agent = found["kvm-2"][0]
            late_agent.hang = True
            result = await group_of(found, seconds=0.5)
            made, late = result.members
            assert not result.succeeded and "i-kvm-2" in result.error
            assert "had not ended at the group's deadline" in late.errors[0]
            assert late_agent.cancelled == [late.snapshot_job_id]
            assert late.snapshot_state == "cancelled" and late.snapshot_ids == ()
            assert made.removed_ids == made.snapshot_ids != ()
            assert result.all_thawed and result.leftovers == ()

    run(test)


def test_a_deadline_already_passed_freezes_nothing():
    async def test() -> None:
        async with agents("kvm-1") as found:
            result = await group_of(found, seconds=-1)
            assert not result.succeeded
            assert found["kvm-1"][0].calls["FreezeForGroup"] == 0
            assert result.members[0].thawed is None

    run(test)


def test_a_thaw_that_fails_is_reported_for_that_member():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            stuck = found["kvm-2"][0]
            stuck.holds["i-kvm-2"] = "other"  # ThawGroup of g-1 then leaves it frozen
            stuck.frozen.add("i-kvm-2")
            stuck.refuse_freeze = True
            result = await group_of(found)
            assert not result.succeeded and not result.all_thawed
            assert result.members[1].thawed is False
            assert any("still reports" in e for e in result.members[1].errors)
            assert result.members[0].thawed is True

    run(test)


def test_the_inventory_refuses_a_stopped_vm_or_a_busy_volume_before_freezing_anything():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            inventory = FakeInventory()
            inventory.add_host("kvm-1")
            inventory.add_host("kvm-2")
            inventory.add_vm("kvm-1", "kvm-1")
            inventory.add_vm("kvm-2", "kvm-2", state="Stopped")
            inventory.set_volume("kvm-1-root", "Snapshotting")
            with pytest.raises(GroupRefused) as refused:
                await group_of(found, inventory=await inventory.refresh())
            assert len(refused.value.reasons) == 2
            assert "volume busy" in refused.value.reasons[0]
            assert "Stopped" in refused.value.reasons[1]
            assert all(agent.calls["FreezeForGroup"] == 0 for agent, _ in found.values())

    run(test)


def test_the_inventory_refuses_a_host_that_is_not_up_and_enabled():
    async def test() -> None:
        async with agents("kvm-1") as found:
            inventory = FakeInventory()
            inventory.add_host("kvm-1")
            inventory.add_vm("kvm-1", "kvm-1")
            inventory.set_host("kvm-1", "Up", "Maintenance")
            with pytest.raises(GroupRefused, match="not Up/Enabled"):
                await group_of(found, inventory=await inventory.refresh())
            inventory.set_host("kvm-1", "Up", "Enabled")
            result = await group_of(found, inventory=await inventory.refresh())
            assert result.succeeded, result.error

    run(test)


async def soon(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "never happened"
        await asyncio.sleep(0.005)


def succeeded_jobs(agent: FakeAgent) -> list[str]:
    return [i for i, job in agent.jobs.items() if job.state == pb.JOB_STATE_SUCCEEDED]


def test_a_job_whose_replies_were_all_lost_is_found_by_its_key_and_its_snapshot_removed():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            lossy = found["kvm-2"][0]
            lossy.lose_replies = 1_000_000  # the job is made; no answer ever names it
            result = await group_of(found, seconds=0.5)
            made, lost = result.members
            assert not result.succeeded and "snapshot failed for i-kvm-2" in result.error
            (job_id,) = (i for i, job in lossy.jobs.items() if job.operation == "snapshot")
            assert lost.snapshot_key == snapshot_key("g-1", "i-kvm-2")
            assert lost.snapshot_job_id == job_id and lost.snapshot_state == "succeeded"
            assert lost.snapshot_ids != () and lost.removed_ids == lost.snapshot_ids
            assert lossy.deleted == list(lost.snapshot_ids) and lossy.calls["ListJobs"] == 1
            assert any(f"found it by its key: {job_id}" in e for e in lost.errors)
            assert made.removed_ids == made.snapshot_ids != ()
            assert result.all_thawed and result.leftovers == ()

    run(test)


def test_a_create_that_never_reached_the_agent_finds_no_job_and_removes_nothing():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            away = found["kvm-2"][0]
            away.refuse = [grpc.StatusCode.UNAVAILABLE] * 1000
            result = await group_of(found, seconds=0.5)
            lost = result.members[1]
            assert not result.succeeded and away.calls["ListJobs"] == 1
            assert (lost.snapshot_job_id, lost.snapshot_ids, away.deleted) == ("", (), [])
            assert not any("cleanup" in e for e in lost.errors)
            assert result.all_thawed and result.leftovers == ()

    run(test)


def test_a_lost_job_that_cannot_be_looked_up_is_reported_as_possibly_left():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            lossy = found["kvm-2"][0]
            lossy.lose_replies = 1_000_000
            lossy.list_jobs_error = grpc.StatusCode.PERMISSION_DENIED
            result = await group_of(found, seconds=0.5)
            lost = result.members[1]
            assert not result.succeeded and lost.snapshot_job_id == ""
            assert lost.snapshot_key == snapshot_key("g-1", "i-kvm-2")
            (said,) = (e for e in lost.errors if e.startswith("cleanup"))
            assert "ListJobs failed" in said and "may remain" in said
            assert result.all_thawed

    run(test)


def test_a_cancelled_group_thaws_every_member_and_removes_what_they_made():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            fast, slow = found["kvm-1"][0], found["kvm-2"][0]
            slow.hang = True
            task = asyncio.ensure_future(group_of(found, seconds=30))
            await soon(lambda: bool(succeeded_jobs(fast)) and slow.calls["CreateSnapshot"] > 0)
            await asyncio.sleep(0.05)  # the slow job is being followed

            task.cancel()

            with pytest.raises(GroupInterrupted) as interrupted:
                await task
            result = interrupted.value.result
            assert task.cancelled() and not result.succeeded and "cancelled" in result.error
            assert all(agent.frozen == set() and agent.holds == {} for agent in (fast, slow))
            assert all(m.thawed is True for m in result.members)
            made, late = result.members
            assert made.snapshot_ids != () and fast.deleted == list(made.snapshot_ids)
            assert slow.cancelled == [late.snapshot_job_id] and late.snapshot_ids == ()
            assert result.leftovers == ()

    run(test)


def test_cancelling_again_while_thawing_does_not_stop_the_thaw_or_the_cleanup():
    async def test() -> None:
        async with agents("kvm-1", "kvm-2") as found:
            fast, slow = found["kvm-1"][0], found["kvm-2"][0]
            slow.hang = True
            fast.thaw_delay = slow.thaw_delay = 0.3
            task = asyncio.ensure_future(group_of(found, seconds=30))
            await soon(lambda: bool(succeeded_jobs(fast)) and slow.calls["CreateSnapshot"] > 0)
            await asyncio.sleep(0.05)
            task.cancel()
            await soon(lambda: len(fast.thaws) > 0)
            for _ in range(3):  # an impatient operator
                task.cancel()
                await asyncio.sleep(0.01)

            with pytest.raises(GroupInterrupted) as interrupted:
                await task
            result = interrupted.value.result
            assert all(agent.frozen == set() for agent in (fast, slow)) and result.all_thawed
            assert fast.deleted == list(result.members[0].snapshot_ids) != []
            assert result.leftovers == ()

    run(test)


def test_a_group_config_refuses_a_hold_that_is_not_a_positive_finite_number():
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_hold"):
            GroupConfig(max_hold=bad)


def test_the_hold_asked_of_each_agent_is_the_configured_max_hold():
    async def test() -> None:
        async with agents("kvm-1") as found:
            agent, client = found["kvm-1"]
            config = GroupConfig(max_hold=7.5, cleanup_timeout=5.0, backoff_base=0.01)
            result = await snapshot_group(
                [GroupMember(client, "i-a")], deadline=time.monotonic() + 20, config=config
            )
            assert result.succeeded and agent.hold_seconds == [7.5]

    run(test)


# CloudStack told a member's new active image, only while its disk still runs it.


def test_a_members_snapshot_is_recorded_when_its_disk_still_runs_the_jobs_image(tmp_path):
    async def test(lab: Lab) -> None:
        overlay = overlay_name()
        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")
        client = lab.agents.client(lab.host)  # type: ignore[arg-type]

        problems = await record_snapshot(
            lab.client, client, await lab.inventory(), lab.vm.id, both_disks(lab, overlay)
        )

        assert problems == []
        assert lab.sim.world.volumes[lab.root.id].path == overlay
        assert lab.tags(lab.root)["hostsnap-consistency"] == "application"

    in_lab(tmp_path, test)


def test_a_member_whose_disk_moved_on_is_not_recorded_with_the_older_layer(tmp_path):
    async def test(lab: Lab) -> None:
        older, newer = overlay_name(), overlay_name()
        lab.agent_disks(f"{lab.mount}/{newer}", "rbd/data-5d1e")  # a policy job's, since
        client = lab.agents.client(lab.host)  # type: ignore[arg-type]
        recorded = lab.root.path

        problems = await record_snapshot(
            lab.client, client, await lab.inventory(), lab.vm.id, both_disks(lab, older)
        )

        assert lab.sim.world.volumes[lab.root.id].path == recorded
        (problem,) = problems
        assert newer in problem and "left to the reconcile pass" in problem
        assert "hostsnap-consistency" not in lab.tags(lab.root)

    in_lab(tmp_path, test)


def test_a_member_back_on_its_recorded_image_is_left_alone_without_a_problem(tmp_path):
    async def test(lab: Lab) -> None:
        recorded = lab.root.path
        lab.agent_disks(f"{lab.mount}/{recorded}", "rbd/data-5d1e")
        client = lab.agents.client(lab.host)  # type: ignore[arg-type]

        problems = await record_snapshot(
            lab.client, client, await lab.inventory(), lab.vm.id, both_disks(lab, overlay_name())
        )

        assert problems == [] and lab.sim.world.volumes[lab.root.id].path == recorded

    in_lab(tmp_path, test)


def outcome(domain: str, job_id: str, made: tuple[str, ...], removed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    return MemberOutcome(domain, "x", True, True, "k", job_id, "succeeded", made, removed, ())


def test_a_failed_group_records_every_member_whose_snapshot_remains_each_on_its_own(tmp_path):
    async def test(lab: Lab) -> None:
        overlay = overlay_name()
        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")
        job = both_disks(lab, overlay)
        lab.agent.jobs[job.id] = pb.Job(
            id=job.id, operation="snapshot", state=pb.JOB_STATE_SUCCEEDED, domain=job.domain,
            snapshot=pb.SnapshotResult(consistency=1, disks=[
                pb.DiskSnapshot(target=d.target, kind=1 if d.kind == "file" else 2,
                                snapshot_id=d.snapshot_id, content=d.content,
                                active_image=d.active_image)
                for d in job.disks
            ]),
        )  # fmt: skip
        client = lab.agents.client(lab.host)  # type: ignore[arg-type]
        domain = lab.vm.instance_name
        members = [
            GroupMember(client, "i-lost", vm_id="lost"),  # its job is unknown to the agent
            GroupMember(client, domain, vm_id=lab.vm.id),  # its delete failed: kept
            GroupMember(client, "i-gone", vm_id="gone"),  # removed again: nothing to record
        ]
        ids = job.snapshot_ids
        result = GroupResult(
            "g-1",
            False,
            (
                outcome("i-lost", "f" * 32, ("s-1",), ()),
                outcome(domain, job.id, ids, ids[1:]),
                outcome("i-gone", "e" * 32, ("s-2",), ("s-2",)),
            ),
            "snapshot failed for i-x",
        )
        parts = type("Parts", (), {"cloudstack": lab.client})()

        problems = await _record(parts, await lab.inventory(), members, result)  # type: ignore[arg-type]

        (problem,) = problems
        assert problem.startswith(f"i-lost: job {'f' * 32}")
        assert lab.sim.world.volumes[lab.root.id].path == overlay
        assert lab.agent.calls["GetJob"] == 2  # not asked of the member with nothing kept

    in_lab(tmp_path, test)
