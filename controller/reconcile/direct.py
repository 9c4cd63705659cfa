"""A snapshot made outside the store's jobs (a consistency group's member): CloudStack is
told each file volume's new active image and the snapshot's tags, without intents. If this
is cut short, the reconcile pass finds the volume stale (its agent's image is a hostsnap
overlay of the recorded path) and fixes it.

The job's result says what the disk ran when the job ended; another snapshot (a policy's
job) may have moved the disk on since. So the disk's active image is read from its agent
right before updateVolume, and a path is written only when it is still the job's: an older
layer in CloudStack's record would be booted by CloudStack's next start of the VM, dropping
every write made since."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from controller.agents import AgentClient, AgentError, AgentJob, SnapshotDisk
from controller.cloudstack import CloudStackClient, CloudStackError
from controller.inventory import InventorySnapshot, StoragePool, Volume
from controller.reconcile.apply import is_disk_of
from controller.reconcile.paths import PathRefused, cloudstack_path
from controller.reconcile.tags import replace_tags, snapshot_tags
from controller.reconcile.update import UpdateFailed, update_path

log = logging.getLogger(__name__)


async def record_snapshot(
    cloudstack: CloudStackClient,
    agent: AgentClient,
    inventory: InventorySnapshot,
    vm_id: str,
    agent_job: AgentJob,
) -> list[str]:
    """What could not be recorded, one line per volume (empty: all recorded). `agent` is
    the client of the agent that ran `agent_job` (the VM's host)."""
    problems = []
    tags = snapshot_tags(datetime.now(UTC), agent_job.consistency or "unknown")
    matched: set[str] = set()
    for volume in inventory.volumes_of(vm_id):
        recorded = volume.path or ""
        disks = [d for d in agent_job.disks if recorded and is_disk_of(d, recorded)]
        matched.update(d.target for d in disks)
        pool = inventory.pools.get(volume.pool_id or "")
        if len(disks) != 1 or pool is None:
            continue  # not snapshotted, or not one disk of it: nothing to say about it
        try:
            if pool.is_file:
                moved = await _record_path(cloudstack, agent, agent_job, volume, pool, disks[0])
                if moved is not None:  # the disk is no longer the job's: no path, no tags
                    if moved:
                        log.warning("volume %s: %s", volume.id, moved)
                        problems.append(f"volume {volume.name or volume.id}: {moved}")
                    continue
            await replace_tags(cloudstack, "Volume", volume.id, tags)
        except (PathRefused, UpdateFailed, CloudStackError, AgentError) as e:
            log.error("volume %s of snapshot job %s: %s", volume.id, agent_job.id, e)
            problems.append(f"volume {volume.name or volume.id}: {e}")
    for disk in agent_job.disks:  # CloudStack's record cannot follow it: said, not hidden
        if disk.target not in matched:
            problems.append(
                f"disk {disk.target} of {agent_job.domain} (now {disk.active_image}) is none "
                "of the VM's volumes as CloudStack records them: not recorded"
            )
    return problems


async def _record_path(
    cloudstack: CloudStackClient,
    agent: AgentClient,
    agent_job: AgentJob,
    volume: Volume,
    pool: StoragePool,
    disk: SnapshotDisk,
) -> str | None:
    """None when CloudStack records the job's active image (now, or already); else the disk
    moved on from it and nothing was written: "" when it is back on the recorded image (in
    line), else why it is left to the reconcile pass."""
    recorded = volume.path or ""
    new_path = cloudstack_path(disk.active_image, pool, recorded)
    if new_path == recorded:
        return None
    now = await _active_image(agent, agent_job.domain, disk.target)
    if now != disk.active_image:
        if now and _maps_to(now, pool, recorded):
            return ""  # the snapshot was taken back (deleted): CloudStack's record is right
        return (
            f"disk {disk.target} of {agent_job.domain} now runs {now or 'nothing known'}, "
            f"not {disk.active_image} of job {agent_job.id}: not recorded, left to the "
            "reconcile pass"
        )
    await update_path(cloudstack, volume.id, new_path, lambda: None)
    return None


async def _active_image(agent: AgentClient, domain: str, target: str) -> str:
    """The disk's active image as its agent sees it now ("" when the domain has no such
    disk)."""
    disks = await agent.list_volumes(domain)
    return next((d.location for d in disks if d.target == target), "")


def _maps_to(image: str, pool: StoragePool, recorded: str) -> bool:
    try:
        return cloudstack_path(image, pool, recorded) == recorded
    except PathRefused:
        return False
