"""Right before a stale path is fixed: the pass read the agents and CloudStack a while ago,
and in the meantime a job (or a group snapshot, which has no store job) may have moved the
disk, or another writer CloudStack's record. The fix goes ahead only when nothing is in flight
for the VM and both still say what the pass saw; else the row is BUSY and the next pass looks
again. Writing an older layer's name would make CloudStack boot it and drop the writes since."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from controller.agents import AgentError, AgentPool
from controller.cloudstack import CloudStackClient, CloudStackError
from controller.inventory import InventorySnapshot
from controller.reconcile.report import VolumeRow, VolumeStatus
from controller.store import JobState, Store

IN_FLIGHT = (JobState.DISPATCHING, JobState.RUNNING)


async def recheck(
    row: VolumeRow,
    store: Store,
    cloudstack: CloudStackClient,
    inventory: InventorySnapshot,
    agents: AgentPool,
    timeout: float,
) -> VolumeRow:
    vm = inventory.vm_by_instance_name(row.domain)
    host = inventory.hosts.get((vm.host_id if vm else None) or "")
    if vm is None or host is None:
        return _busy(row, "its VM or host left the inventory")
    in_flight = await asyncio.to_thread(store.jobs.find, states=IN_FLIGHT, host_id=host.id)
    if any(job.vm_id == vm.id for job in in_flight):
        return _busy(row, "a job on its VM is in flight")
    try:
        disks = await agents.client(host).list_volumes(vm.instance_name, timeout=timeout)
        volumes = await cloudstack.list_all("listVolumes", {"id": row.volume_id, "listall": "true"})
    except (AgentError, CloudStackError) as e:
        return _busy(row, f"could not be read again: {e}")
    now_on_disk = next((d.location for d in disks if d.target == row.target), None)
    now_recorded = volumes[0].get("path") if len(volumes) == 1 else None
    if now_on_disk != row.agent_image or now_recorded != row.cloudstack_path:
        return _busy(
            row,
            f"changed during the pass (disk {now_on_disk}, CloudStack {now_recorded})",
        )
    return row


def _busy(row: VolumeRow, why: str) -> VolumeRow:
    return replace(row, status=VolumeStatus.BUSY, detail=f"{row.detail}; not fixed now: {why}")
