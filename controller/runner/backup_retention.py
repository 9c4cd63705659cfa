"""A policy's backups kept `keep_backups` per volume on its target, apart from the snapshots
on primary storage. Backups form chains (each incremental one applies over its parent), so a
backup is deleted only when none of the kept ones needs it, and never one that is not the
policy's (a manual backup, another policy's) or that such a backup builds on. What goes is
deleted by subtree: one DeleteBackup with its descendants, all of which go too.

A chain only ends where a full backup starts a new one: a policy that keeps N backups has
the next backup made full once the volume's chain is N long (`needs_full`), so the old chain
becomes deletable once the new one holds N backups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from controller import policies, store
from controller.agents import AgentBackup, AgentError, AgentPool
from controller.inventory import InventorySnapshot
from controller.runner.runner import snapshot_prefix

log = logging.getLogger(__name__)


def to_delete(backups: Sequence[AgentBackup], policy_id: str, keep: int) -> list[AgentBackup]:
    """Of one volume's backups (oldest first): the roots of the subtrees to delete."""
    by_id = {b.id: b for b in backups}
    prefix = snapshot_prefix(policy_id)
    ours = [b for b in backups if b.snapshot_name.startswith(prefix)]
    needed = _with_ancestors(
        [*ours[-keep:], *(b for b in backups if not b.snapshot_name.startswith(prefix))], by_id
    )
    going = {b.id for b in ours if b.id not in needed}
    return [b for b in ours if b.id in going and b.parent_id not in going]


def needs_full(backups: Sequence[AgentBackup], keep: int) -> bool:
    """Whether the volume's next backup should start a new chain: its last one's chain (the
    last backup and those it builds on) is `keep` long."""
    if not backups:
        return False
    by_id = {b.id: b for b in backups}
    return len(_with_ancestors([backups[-1]], by_id)) >= keep


def _with_ancestors(chosen: Iterable[AgentBackup], by_id: dict[str, AgentBackup]) -> set[str]:
    found: set[str] = set()
    for backup in chosen:
        current: AgentBackup | None = backup
        while current is not None and current.id not in found:
            found.add(current.id)
            current = by_id.get(current.parent_id)
    return found


async def backup_retention_jobs(
    db: store.Store,
    agents: AgentPool,
    inventory: InventorySnapshot,
    policy: policies.Policy,
    run: store.Run,
) -> list[store.Job]:
    """After a run: the DeleteBackup jobs that bring each volume it backed up down to the
    policy's keep_backups."""
    if policy.backup_target is None or policy.keep_backups is None:
        return []
    target, keep = policy.backup_target, policy.keep_backups
    jobs = await asyncio.to_thread(db.jobs.find, run_id=run.id, kinds=(store.JobKind.BACKUP,))
    backed_up = {j.vm_id for j in jobs if j.state is store.JobState.SUCCEEDED and j.vm_id}
    made = []
    for vm_id in sorted(backed_up):
        placed = inventory.placed(vm_id)
        if placed is None:
            log.info("backup retention of %s: VM %s is on no host now; later", policy.name, vm_id)
            continue
        vm, host = placed
        try:
            listed = await agents.client(host).list_backups(target, vm.instance_name)
        except AgentError as e:
            log.warning("backup retention of policy %s on %s: %s", policy.name, vm.name, e)
            continue
        by_volume: dict[str, list[AgentBackup]] = {}
        for backup in listed:
            by_volume.setdefault(backup.volume, []).append(backup)
        for backups in by_volume.values():
            for root in to_delete(backups, policy.id, keep):
                spec = store.JobSpec(
                    store.JobKind.BACKUP_DELETE,
                    host.id,
                    vm_id=vm.id,
                    params={"backup_id": root.id, "target": target, "with_descendants": "true"},
                    idempotency_key=f"hostsnap-backup-retention/{root.id}",
                )
                try:
                    made.append(await asyncio.to_thread(db.jobs.create, spec))
                except store.Conflict as e:  # made before, for another host (the VM moved)
                    log.info("backup retention of policy %s: %s", policy.name, e)
    if made:
        log.info(
            "policy %s keeps %d backups per volume: %d to delete", policy.name, keep, len(made)
        )
    return made
