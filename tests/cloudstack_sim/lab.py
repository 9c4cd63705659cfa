"""Point simulated VMs at the lab's real guests, so that CloudStack's records (instance name,
host, pool, volume path) name what libvirt and Ceph on this host really have."""

from __future__ import annotations

from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN, RBD_POOL, LabPaths

from .seed import LabDisk
from .server import CloudStackSimulator
from .world import VirtualMachine


def point_at_lab(
    sim: CloudStackSimulator,
    paths: LabPaths,
    *,
    host_name: str = "lab-host",
    host_ip: str = "127.0.0.1",
) -> tuple[VirtualMachine, VirtualMachine]:
    """VMs `lab-qcow2` (its disk a file in the lab's pool directory, recorded as a
    SharedMountPoint pool) and `lab-rbd` (image `lab-rbd` in Ceph pool `rbd`), both Running
    on the lab host."""
    qcow2 = sim.add_lab_vm(
        instance_name=QCOW2_DOMAIN,
        host_name=host_name,
        host_ip=host_ip,
        disks=[LabDisk("SharedMountPoint", str(paths.pool), paths.qcow2_disk.name)],
    )
    rbd = sim.add_lab_vm(
        instance_name=RBD_DOMAIN,
        host_name=host_name,
        host_ip=host_ip,
        disks=[LabDisk("RBD", RBD_POOL, RBD_DOMAIN)],
    )
    return qcow2, rbd
