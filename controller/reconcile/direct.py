"""A snapshot made outside the store's jobs (a consistency group's member): CloudStack is
told each file volume's new active image and the snapshot's tags, without intents. If this
is cut short, the reconcile pass finds the volume stale (its agent's image is a hostsnap
overlay of the recorded path) and fixes it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from controller.agents import AgentJob
from controller.cloudstack import CloudStackError
from controller.inventory import InventorySnapshot
from controller.reconcile.apply import is_disk_of
from controller.reconcile.paths import PathRefused, cloudstack_path
from controller.reconcile.ports import CloudStackPort
from controller.reconcile.tags import replace_tags, snapshot_tags
from controller.reconcile.update import UpdateFailed, update_path

log = logging.getLogger(__name__)


async def record_snapshot(
    cloudstack: CloudStackPort, inventory: InventorySnapshot, vm_id: str, agent_job: AgentJob
) -> list[str]:
    """What could not be recorded, one line per volume (empty: all recorded)."""
    problems = []
    tags = snapshot_tags(datetime.now(UTC), agent_job.consistency or "unknown")
    for volume in inventory.volumes_of(vm_id):
        recorded = volume.path or ""
        disks = [d for d in agent_job.disks if recorded and is_disk_of(d, recorded)]
        pool = inventory.pools.get(volume.pool_id or "")
        if len(disks) != 1 or pool is None:
            continue  # not snapshotted, or not one disk of it: nothing to say about it
        try:
            if pool.is_file:
                new_path = cloudstack_path(disks[0].active_image, pool, recorded)
                if new_path != recorded:
                    await update_path(cloudstack, volume.id, new_path, lambda: None)
            await replace_tags(cloudstack, "Volume", volume.id, tags)
        except (PathRefused, UpdateFailed, CloudStackError) as e:
            log.error("volume %s of snapshot job %s: %s", volume.id, agent_job.id, e)
            problems.append(f"volume {volume.name or volume.id}: {e}")
    return problems
