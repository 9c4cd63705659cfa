"""A restore through the controller: sent to the first host whose agent lists the backup,
in place only for a VM CloudStack shows Stopped, refused with the reason otherwise (fake
agents speaking the real proto)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.agents import AgentJobState
from controller.runner.restore import RestoreRefused, restore
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.unit.dispatch_support import FAST, DispatchZone


def test_a_restore_goes_through_a_host_whose_agent_reaches_the_backup(tmp_path: Path):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1", "kvm-2"), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            zone.agents["kvm-2"].backups["nfs"] = [
                pb.Backup(id="f1", volume="i-web-1/vdb", kind=pb.VOLUME_KIND_FILE),
                pb.Backup(id="b1", volume="i-web-1/vda", kind=pb.VOLUME_KIND_RBD),
            ]
            assert zone.pool is not None
            inventory = await zone.inventory.refresh()

            done = await restore(inventory, zone.pool, "b1", "nfs", to="rbd/new")

            assert (done.host, done.job.state) == ("kvm-2", AgentJobState.SUCCEEDED)
            assert done.job.restored_to == "rbd/new"
            assert zone.agents["kvm-2"].restored == [("b1", "rbd/new")]
            with pytest.raises(RestoreRefused, match="web-1 is Running in CloudStack"):
                await restore(inventory, zone.pool, "b1", "nfs", in_place=True)
            with pytest.raises(RestoreRefused, match="is of a file volume"):
                await restore(inventory, zone.pool, "f1", "nfs", in_place=True)
            with pytest.raises(RestoreRefused, match="lists backup b2"):
                await restore(inventory, zone.pool, "b2", "nfs", to="rbd/new")
            zone.inventory.set_vm("web-1", state="Stopped")

            stopped = await restore(
                await zone.inventory.refresh(), zone.pool, "b1", "nfs", in_place=True
            )

            assert stopped.job.state is AgentJobState.SUCCEEDED
            assert zone.agents["kvm-2"].restored[-1] == ("b1", "in place")
            assert zone.agents["kvm-1"].restored == []

    asyncio.run(test())
