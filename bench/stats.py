"""The cost of one statistics sample for 1, 10 and 40 domains: hostsnap's single bulk call
(getAllDomainStats, NOWAIT) against a per-domain loop of libvirt calls (lookup, blockStats
per disk), same run. The domains are paused lab domains on qcow2 overlays of the lab disk.
Goal: the bulk sample is the cheaper one at 40 domains (ratio loop / bulk > 1)."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from agent.hypervisor.libvirt_host import LibvirtHost
from bench.report import write_report
from hostsnap_lab import domains
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI

COUNTS = (1, 10, 40)
REPEATS = 20
PREFIX = "bench-stats-"


def per_domain_loop(conn: libvirt.virConnect, names: list[str]) -> None:
    for name in names:
        dom = conn.lookupByName(name)
        dom.info()
        dom.blockStats("vda")


def median_ms(action: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def make_domains(lab: lab_stack.Lab, conn: libvirt.virConnect, count: int) -> list[str]:
    names = []
    for n in range(count):
        name = f"{PREFIX}{n}"
        disk = lab.paths.pool / f"{name}.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(lab.paths.base_disk),
                str(disk),
            ],
            check=True,
        )
        xml = (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        )
        conn.defineXML(domains.domain_xml(lab.paths, domains.LabDomain(name, xml)))
        conn.lookupByName(name).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        names.append(name)
    return names


def remove_domains(lab: lab_stack.Lab, conn: libvirt.virConnect) -> None:
    for dom in conn.listAllDomains():
        if dom.name().startswith(PREFIX):
            domains.remove(conn, dom.name())
    for made in lab.paths.pool.glob(f"{PREFIX}*"):
        made.unlink()


def main() -> Path:
    lab = lab_stack.up()
    conn = libvirt.open(URI)
    host = LibvirtHost(URI)
    bulk: dict[int, float] = {}
    loop: dict[int, float] = {}
    try:
        remove_domains(lab, conn)
        names = make_domains(lab, conn, max(COUNTS))
        for count in COUNTS:
            chosen = names[:count]
            # The bulk call answers for every running domain; pause the others' share by
            # measuring with exactly `count` bench domains defined and running.
            for extra in names[count:]:
                conn.lookupByName(extra).destroy()
            bulk[count] = median_ms(host.block_counters)
            loop[count] = median_ms(lambda chosen=chosen: per_domain_loop(conn, chosen))
            for extra in names[count:]:
                conn.lookupByName(extra).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            print(f"{count:>2} domains: bulk {bulk[count]:.2f} ms, loop {loop[count]:.2f} ms")
    finally:
        remove_domains(lab, conn)
        conn.close()
    return write_report(
        "stats",
        ratio=loop[max(COUNTS)] / bulk[max(COUNTS)],
        goal=f"per-domain loop / bulk sample at {max(COUNTS)} domains; goal > 1",
        measured={"bulk_sample_ms": bulk, "note": "the two lab guests run too"},
        anchor={"per_domain_loop_ms": loop, "calls": "lookupByName, info, blockStats per domain"},
    )


if __name__ == "__main__":
    main()
