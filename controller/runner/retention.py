"""Retention after a run: for each VM the run snapshotted, the agent lists the snapshots
this policy made (named `policy-<id>-...`), `policies.decide` picks the oldest beyond
maxsnaps (never the newest), and each gets a DELETE job, once (its idempotency key names
the snapshot), with the intent of its volume when the merge may move a file volume's active
image. The dispatcher sends them like any job: one per host at a time, CloudStack's busy
states checked right before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from controller import policies, store
from controller.agents import AgentDiskSnapshots, AgentError, AgentPool
from controller.inventory import InventorySnapshot, Volume
from controller.reconcile import same_volume
from controller.runner.runner import snapshot_prefix

log = logging.getLogger(__name__)


async def retention_jobs(
    db: store.Store,
    agents: AgentPool,
    inventory: InventorySnapshot,
    policy: policies.Policy,
    run: store.Run,
    caps: policies.RetentionCaps,
) -> list[store.Job]:
    """`caps` as CloudStack has them now (never assumed: a cap raised by the operator would
    otherwise delete snapshots they asked to keep)."""
    keep = policy.keep(caps)
    made = []
    jobs = await asyncio.to_thread(db.jobs.find, run_id=run.id)
    snapshotted = {
        j.vm_id
        for j in jobs
        if j.kind is store.JobKind.SNAPSHOT and j.state is store.JobState.SUCCEEDED
    }
    for vm_id in sorted(v for v in snapshotted if v):
        placed = inventory.placed(vm_id)
        if placed is None:
            log.info("retention of policy %s: VM %s is on no host now; later", policy.name, vm_id)
            continue
        vm, host = placed
        try:
            listed = await agents.client(host).list_snapshots(vm.instance_name)
        except AgentError as e:
            log.warning("retention of policy %s on %s: %s", policy.name, vm.name, e)
            continue
        volumes = inventory.volumes_of(vm.id)
        for disk in listed:
            volume = _volume_of(disk, volumes)
            if volume is None:
                continue
            for snapshot_id in _to_delete(disk, volume, policy, keep):
                made.append(
                    await asyncio.to_thread(
                        db.jobs.create,
                        _delete_spec(inventory, host.id, vm.id, volume, snapshot_id),
                    )
                )
    if made:
        log.info(
            "policy %s keeps %d per volume: %d snapshots to delete", policy.name, keep, len(made)
        )
    return made


def _volume_of(disk: AgentDiskSnapshots, volumes: Sequence[Volume]) -> Volume | None:
    found = [v for v in volumes if v.path and same_volume(disk.location, v.path)]
    return found[0] if len(found) == 1 else None


def _to_delete(
    disk: AgentDiskSnapshots, volume: Volume, policy: policies.Policy, keep: int
) -> list[str]:
    prefix = snapshot_prefix(policy.id)
    records = [
        policies.SnapshotRecord(s.id, volume.id, s.created_at, "BackedUp", policy.id)
        for s in disk.snapshots
        if s.name.startswith(prefix) and s.created_at is not None
    ]
    decision = policies.decide(records, volume_id=volume.id, policy_id=policy.id, keep=keep)
    return [s.id for s in decision.delete]


def _delete_spec(
    inventory: InventorySnapshot, host_id: str, vm_id: str, volume: Volume, snapshot_id: str
) -> store.JobSpec:
    return store.JobSpec(
        store.JobKind.DELETE,
        host_id,
        vm_id=vm_id,
        volume_id=volume.id,
        params={"snapshot_id": snapshot_id},
        idempotency_key=f"hostsnap-retention/{snapshot_id}",
        intents=(store.IntentSpec(volume.id, volume.path),)
        if inventory.on_file_pool(volume)
        else (),
    )
