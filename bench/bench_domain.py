"""A disposable lab domain for a benchmark: a qcow2 copy of the lab's data disk, booted,
with its guest agent answering; removed with its images afterwards."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import libvirt

from hostsnap_lab import domains
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI


@contextlib.contextmanager
def bench_domain(lab: lab_stack.Lab, name: str) -> Iterator[libvirt.virDomain]:
    conn = libvirt.open(URI)
    pool = lab.paths.pool
    domains.remove(conn, name)
    for stale in pool.glob(f"{name}*"):
        stale.unlink()
    disk = pool / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(disk)], check=True
    )
    xml = (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
    )
    try:
        domains.define_and_start(conn, lab.paths, domains.LabDomain(name, xml))
        lab_stack.wait_for_guest_agents(conn, lab.paths, (name,))
        yield conn.lookupByName(name)
    finally:
        domains.remove(conn, name)
        for made in pool.glob(f"{name}*"):
            made.unlink()
        conn.close()
