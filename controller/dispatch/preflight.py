"""The checks right before a job is sent, against CloudStack's inventory: which host's agent
acts, or why nothing may be done now.

Never act on a VM or volume CloudStack shows busy, nor on a host that is not Up and Enabled.
A running VM is acted on by the agent of the host it runs on; a stopped VM whose volumes are
all on RBD by any usable host's agent (Ceph is reachable from each), the job's own host
first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.inventory import Host, InventorySnapshot, StoragePool, VirtualMachine, Volume
from controller.store import Job, JobKind

# VirtualMachine.State values a snapshot may be taken in.
RUNNING_STATES = frozenset({"Running"})
# Sent to the host the job names whatever the VM does now: a backup reads a snapshot in that
# agent's journal (the VM may have migrated since), and changes nothing on primary storage.
ON_ITS_HOST = frozenset({JobKind.BACKUP, JobKind.BACKUP_DELETE})
STOPPED_STATES = frozenset({"Stopped"})


@dataclass(frozen=True)
class Target:
    host: Host
    vm: VirtualMachine
    volumes: tuple[Volume, ...]  # the volumes the job works on
    # A stopped VM's: the RBD pools of its volumes (their `path` is the Ceph pool's name).
    pools: tuple[StoragePool, ...] = ()

    @property
    def pool_ids(self) -> tuple[str, ...]:
        return tuple(sorted({v.pool_id for v in self.volumes if v.pool_id}))


@dataclass(frozen=True)
class Skip:
    reason: str


def check(job: Job, inventory: InventorySnapshot, healthy: Callable[[str], bool]) -> Target | Skip:
    """Where `job` is to be sent now, or why not. `healthy` says whether a host's agent may
    be given work (used to choose among hosts for a stopped VM on RBD)."""
    if job.vm_id is None:
        return Skip(f"job {job.id} names no VM")
    vm = inventory.vms.get(job.vm_id)
    if vm is None:
        return Skip(f"VM {job.vm_id} is not in CloudStack's inventory")
    volumes = _volumes(job, vm, inventory)
    if isinstance(volumes, Skip):
        return volumes
    if job.kind in ON_ITS_HOST:
        host = inventory.hosts.get(job.host_id)
        if host is None:
            return Skip(f"host {job.host_id} of job {job.id} is not in the inventory")
        return Target(host, vm, volumes) if host.usable else _unusable(host)
    busy = [v for v in volumes if v.busy]
    if busy:
        named = ", ".join(f"{v.name or v.id} is {v.state}" for v in busy)
        return Skip(f"volume busy in CloudStack: {named}")
    if vm.state in RUNNING_STATES:
        host = inventory.hosts.get(vm.host_id or "")
        if host is None:
            return Skip(f"VM {vm.name} is {vm.state} on host {vm.host_id}, not in the inventory")
        return Target(host, vm, volumes) if host.usable else _unusable(host)
    if vm.state in STOPPED_STATES:
        return _stopped(job, vm, volumes, inventory, healthy)
    return Skip(f"VM {vm.name} is {vm.state} in CloudStack")


def _volumes(
    job: Job, vm: VirtualMachine, inventory: InventorySnapshot
) -> tuple[Volume, ...] | Skip:
    if job.volume_id is None:
        volumes = inventory.volumes_of(vm.id)
        return volumes if volumes else Skip(f"VM {vm.name} has no volumes in the inventory")
    volume = inventory.volumes.get(job.volume_id)
    if volume is None:
        return Skip(f"volume {job.volume_id} is not in CloudStack's inventory")
    if volume.vm_id != vm.id:
        return Skip(f"volume {volume.name or volume.id} is no longer attached to VM {vm.name}")
    return (volume,)


def _unusable(host: Host) -> Skip:
    return Skip(f"host {host.name} is {host.state}/{host.resource_state}, not Up/Enabled")


def _stopped(
    job: Job,
    vm: VirtualMachine,
    volumes: tuple[Volume, ...],
    inventory: InventorySnapshot,
    healthy: Callable[[str], bool],
) -> Target | Skip:
    pools = [inventory.pools.get(v.pool_id or "") for v in volumes]
    if not all(pool is not None and pool.is_rbd for pool in pools):
        return Skip(f"VM {vm.name} is stopped and not all its volumes are on RBD: no host")
    candidates = sorted(
        (h for h in inventory.hosts.values() if h.usable and h.zone_id == vm.zone_id),
        key=lambda h: (h.id != job.host_id, not healthy(h.id), h.name),
    )
    if not candidates:
        return Skip(f"VM {vm.name} is stopped and no host of its zone is Up/Enabled")
    return Target(candidates[0], vm, volumes, tuple(p for p in pools if p is not None))
