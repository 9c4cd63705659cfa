"""The consistency group coordinator against fake agents speaking the real proto over grpc.aio
on localhost: freeze all, snapshot all, thaw all; a failure of one member thaws every member
and removes the snapshots the others made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from controller.agents import AgentClient
from controller.groups import GroupConfig, GroupMember, GroupRefused, GroupResult, snapshot_group
from tests.grpc_fake_agent import FakeAgent, FakeAgentServer
from tests.unit.dispatch_support import FakeInventory

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
