"""A disposable lab domain for a benchmark: a copy of the lab's data disk (a qcow2 file in the
pool directory, or an RBD image in the lab's Ceph), booted, with its guest agent answering;
removed with its disk afterwards, also when the benchmark fails."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from xml.sax.saxutils import quoteattr

import libvirt

from hostsnap_lab import domains
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.ceph import MON_ADDR
from hostsnap_lab.libvirtd import URI
from hostsnap_lab.paths import RBD_POOL
from hostsnap_lab.run import run


@contextlib.contextmanager
def disposable_domain(
    lab: lab_stack.Lab, name: str, make_disk: Callable[[], str], remove_disk: Callable[[], None]
) -> Iterator[libvirt.virDomain]:
    """Boots `name` on the disk `make_disk` makes (it returns the disk's XML); the domain and
    the disk, also any left by an earlier run, are removed before and after."""
    conn = libvirt.open(URI)
    domains.remove(conn, name)
    remove_disk()
    try:
        disk_xml = make_disk()
        domains.define_and_start(conn, lab.paths, domains.LabDomain(name, disk_xml))
        lab_stack.wait_for_guest_agents(conn, lab.paths, (name,))
        yield conn.lookupByName(name)
    finally:
        domains.remove(conn, name)
        remove_disk()
        conn.close()


def bench_domain(
    lab: lab_stack.Lab, name: str
) -> contextlib.AbstractContextManager[libvirt.virDomain]:
    """The data disk is `<pool>/<name>.qcow2`; every `<pool>/<name>*` file goes with it."""
    pool = lab.paths.pool
    disk = pool / f"{name}.qcow2"

    def make_disk() -> str:
        run(["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(disk)])
        return (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        )

    def remove_disk() -> None:
        for made in pool.glob(f"{name}*"):
            made.unlink()

    return disposable_domain(lab, name, make_disk, remove_disk)


def rbd_bench_domain(
    lab: lab_stack.Lab, name: str
) -> contextlib.AbstractContextManager[libvirt.virDomain]:
    """The data disk is the RBD image `rbd/<name>` (raw, like the lab's base disk it is
    imported from); it goes with every snapshot it has."""
    rbd = ["rbd", "-c", str(lab.ceph_conf)]
    image = f"{RBD_POOL}/{name}"
    host, port = MON_ADDR.split(":")

    def make_disk() -> str:
        run([*rbd, "import", "--no-progress", str(lab.paths.base_disk), image], timeout=300)
        return (
            f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
            f"<source protocol='rbd' name={quoteattr(image)}>"
            f"<host name='{host}' port='{port}'/><config file={quoteattr(str(lab.ceph_conf))}/>"
            f"</source><target dev='vda' bus='virtio'/></disk>"
        )

    def remove_disk() -> None:
        if name in run([*rbd, "ls", RBD_POOL]).stdout.split():
            run([*rbd, "snap", "purge", "--no-progress", image])
            run([*rbd, "rm", "--no-progress", image])

    return disposable_domain(lab, name, make_disk, remove_disk)
