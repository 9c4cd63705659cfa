"""Backups against the snapshots they are of, for each VM the policies back up: a backup
whose snapshot is gone from primary storage (information: snapshot retention deletes them,
and the backup restores without it), and a policy snapshot newer than the volume's newest
backup with no backup of its own and none on the way (a problem: its backup failed, or the
target lost it; the newest backup is never deleted by retention, so nothing newer can have
been deleted on purpose)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from controller.agents import AgentBackup, AgentDiskSnapshots, AgentError, AgentPool
from controller.inventory import InventorySnapshot
from controller.runner.runner import snapshot_prefix
from controller.store import JobKind, Store

log = logging.getLogger(__name__)

SNAPSHOT_GONE = "snapshot-gone"
BACKUP_MISSING = "backup-missing"


@dataclass(frozen=True)
class BackupFinding:
    kind: str  # SNAPSHOT_GONE or BACKUP_MISSING
    vm_name: str
    volume: str  # "domain/disk"
    target: str
    snapshot_id: str
    backup_id: str  # "" for a missing backup
    detail: str

    @property
    def problem(self) -> bool:
        return self.kind == BACKUP_MISSING


async def backup_findings(
    store: Store, inventory: InventorySnapshot, agents: AgentPool, timeout: float
) -> tuple[list[BackupFinding], list[str]]:
    """What each backed-up VM's agent lists, compared; and what could not be asked."""
    stored = await asyncio.to_thread(store.policies.all, enabled=True)
    prefixes = {
        snapshot_prefix(p.id): p.backup_target for p in stored if p.backup_target is not None
    }
    jobs = await asyncio.to_thread(store.jobs.find, kinds=(JobKind.BACKUP,))
    underway = {j.params.get("snapshot_id", "") for j in jobs if not j.state.final}
    pairs = sorted({(j.vm_id, j.params.get("target", "")) for j in jobs if j.vm_id})
    findings: list[BackupFinding] = []
    errors: list[str] = []
    for vm_id, target in pairs:
        placed = inventory.placed(vm_id)
        if placed is None:
            continue  # not running anywhere: its agent cannot list its snapshots
        vm, host = placed
        agent = agents.client(host)
        try:
            backups = await agent.list_backups(target, vm.instance_name, timeout=timeout)
            disks = await agent.list_snapshots(vm.instance_name, timeout=timeout)
        except AgentError as e:
            errors.append(f"backups of {vm.name} on {target}: {e}")
            continue
        ours = {prefix for prefix, to in prefixes.items() if to == target}
        findings += compare(vm.name, vm.instance_name, target, backups, disks, ours, underway)
    return findings, errors


def compare(
    vm_name: str,
    domain: str,
    target: str,
    backups: list[AgentBackup],
    disks: list[AgentDiskSnapshots],
    prefixes: set[str],
    underway: set[str],
) -> list[BackupFinding]:
    found = []
    on_primary = {s.id for d in disks for s in d.snapshots}
    for backup in backups:
        if backup.snapshot_id not in on_primary:
            found.append(
                BackupFinding(
                    SNAPSHOT_GONE,
                    vm_name,
                    backup.volume,
                    target,
                    backup.snapshot_id,
                    backup.id,
                    "its snapshot is no longer on primary storage; it restores "
                    "from the target alone",
                )
            )
    for disk in disks:
        volume = f"{domain}/{disk.target}"
        of_volume = [b for b in backups if b.volume == volume]
        backed_up = {b.snapshot_id for b in of_volume}
        newest = max((b.taken_at for b in of_volume if b.taken_at), default=None)
        for snap in disk.snapshots:
            ours = any(snap.name.startswith(p) for p in prefixes)
            if not ours or snap.id in backed_up or snap.id in underway:
                continue
            if newest is not None and (snap.created_at is None or snap.created_at <= newest):
                continue  # older than a backup that is there: retention may have removed it
            found.append(
                BackupFinding(
                    BACKUP_MISSING,
                    vm_name,
                    volume,
                    target,
                    snap.id,
                    "",
                    f"policy snapshot {snap.name} has no backup on {target}",
                )
            )
    return found
