"""A small zone to start from, and VMs pointed at the lab's real guests.

The seed: zone `zone-1`; KVM hosts kvm-1 and kvm-2 (Up, Enabled) and kvm-3 (Up, in
Maintenance), plus the secondary storage VM's host record (type SecondaryStorageVM); primary
pools `nfs-primary` (NetworkFilesystem) and `ceph-primary` (RBD); VMs web-1 (Running on
kvm-1), db-1 (Running on kvm-2, owned by account alice) and batch-1 (Stopped, on no host);
their volumes Ready except web-1's data disk (Snapshotting) and db-1's data disk
(Migrating); a detached Ready volume; a BackedUp snapshot and a daily policy on web-1's root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .world import (
    Host,
    Pool,
    Project,
    Snapshot,
    SnapshotPolicy,
    VirtualMachine,
    Volume,
    World,
    Zone,
)

ACCOUNT_IDS = {"admin": 2, "alice": 3}


@dataclass(frozen=True)
class Disk:
    """One volume of a VM to add: where it lives, what CloudStack records as its path."""

    pool: Pool
    path: str
    state: str = "Ready"
    size: int = 8 << 30


@dataclass(frozen=True)
class LabDisk:
    """A disk of a lab guest. `pool_path` is the pool's path as CloudStack records it: the
    directory for a SharedMountPoint/Filesystem pool, the Ceph pool name for RBD."""

    pool_type: str
    pool_path: str
    path: str
    pool_ip: str = "127.0.0.1"


def add_vm(
    world: World,
    *,
    name: str,
    zone: Zone,
    host: Host | None,
    state: str = "Running",
    disks: Sequence[Disk] = (),
    instance_name: str | None = None,
    account: str = "admin",
    project: Project | None = None,
) -> VirtualMachine:
    """A VM with its volumes: the first disk is ROOT (device 0), the others DATADISKs; a
    project's VM and volumes are its project account's."""
    number = next(world.vm_numbers)
    vm = world.add(
        VirtualMachine(
            name=name,
            zone=zone,
            instance_name=instance_name or f"i-{ACCOUNT_IDS.get(account, 4)}-{number}-VM",
            state=state,
            host=host,
            account=account,
            project=project,
        )
    )
    for device, disk in enumerate(disks):
        world.add(
            Volume(
                name=f"ROOT-{number}" if device == 0 else f"DATA-{number}-{device}",
                zone=zone,
                type="ROOT" if device == 0 else "DATADISK",
                state=disk.state,
                pool=disk.pool,
                path=disk.path,
                vm=vm,
                device_id=device,
                size=disk.size,
                account=account,
                project=project,
            )
        )
    return vm


def seed(world: World) -> None:
    zone = world.add(Zone("zone-1"))
    kvm1 = world.add(Host("kvm-1", zone, "10.0.0.11"))
    kvm2 = world.add(Host("kvm-2", zone, "10.0.0.12"))
    world.add(Host("kvm-3", zone, "10.0.0.13", resource_state="Maintenance"))
    world.add(Host("s-1-VM", zone, "10.0.0.40", type="SecondaryStorageVM"))
    nfs = world.add(Pool("nfs-primary", zone, "NetworkFilesystem", "/export/primary", "10.0.0.5"))
    ceph = world.add(Pool("ceph-primary", zone, "RBD", "rbd", "10.0.0.6", scope="ZONE"))

    web = add_vm(
        world,
        name="web-1",
        zone=zone,
        host=kvm1,
        disks=[
            Disk(nfs, "0b6a7c8e-web1-root"),
            Disk(ceph, "5d1e2f3a-web1-data", state="Snapshotting"),
        ],
    )
    add_vm(
        world,
        name="db-1",
        zone=zone,
        host=kvm2,
        account="alice",
        disks=[Disk(ceph, "7c2b9a10-db1-root"), Disk(nfs, "9e8d7c6b-db1-data", state="Migrating")],
    )
    add_vm(
        world,
        name="batch-1",
        zone=zone,
        host=None,
        state="Stopped",
        disks=[Disk(nfs, "3f4e5d6c-batch1-root")],
    )
    world.add(Volume("spare-1", zone, "DATADISK", "Ready", nfs, "1a2b3c4d-spare1"))

    web_root = next(v for v in world.volumes.values() if v.vm is web and v.type == "ROOT")
    world.add(Snapshot("web-1-before-upgrade", web_root))
    world.add(SnapshotPolicy(web_root, interval_type=1, schedule="30:02", max_snaps=8))


def add_lab_vm(
    world: World,
    *,
    instance_name: str,
    host_name: str,
    host_ip: str,
    disks: Sequence[LabDisk],
    state: str = "Running",
    name: str | None = None,
) -> VirtualMachine:
    """A VM whose libvirt domain and disks are the lab's real ones (e.g. `lab-qcow2` with
    `lab-qcow2.qcow2` in the lab's pool directory, `lab-rbd` with image `lab-rbd` in Ceph
    pool `rbd`), on the host named `host_name` (made Up and Enabled if it is new). Pools are
    found by type and path, or made."""
    with world.lock:
        zone = next(iter(world.zones.values()), None) or world.add(Zone("zone-1"))
        host = next((h for h in world.hosts.values() if h.name == host_name), None)
        if host is None:
            host = world.add(Host(host_name, zone, host_ip))
        pools: list[Disk] = []
        for disk in disks:
            pool = next(
                (
                    p
                    for p in world.pools.values()
                    if p.type == disk.pool_type and p.path == disk.pool_path
                ),
                None,
            )
            if pool is None:
                scope = "ZONE" if disk.pool_type == "RBD" else "HOST"
                pool_name = f"lab-{disk.pool_type.lower()}-{len(world.pools) + 1}"
                pool = world.add(
                    Pool(pool_name, zone, disk.pool_type, disk.pool_path, disk.pool_ip, scope)
                )
            pools.append(Disk(pool, disk.path))
        return add_vm(
            world,
            name=name or instance_name,
            zone=zone,
            host=host if state == "Running" else None,
            state=state,
            disks=pools,
            instance_name=instance_name,
        )
