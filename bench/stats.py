"""The cost of one statistics sample for 1, 10 and 40 domains: hostsnap's single bulk call
(getAllDomainStats, NOWAIT) against per-domain loops of libvirt calls, same run. The domains
are paused lab domains on qcow2 overlays of the lab disk.

Two loops: the one that gathers what the bulk call gives (every running domain, each disk
found in its XML, blockStatsFlags for requests, bytes and times, so latency can be
computed) is the anchor of the ratio; the cheapest loop (lookup, info, blockStats of a disk
named in advance, no times) is reported beside it. Goal: the bulk sample is the cheaper one
at 40 domains (ratio anchor / bulk > 1)."""

from __future__ import annotations

import statistics
import subprocess
import time
import xml.etree.ElementTree as ET
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


def same_data_loop(conn: libvirt.virConnect) -> None:
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        for disk in ET.fromstring(dom.XMLDesc()).iterfind("devices/disk/target"):
            dom.blockStatsFlags(disk.get("dev"))


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
    same: dict[int, float] = {}
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
            same[count] = median_ms(lambda: same_data_loop(conn))
            for extra in names[count:]:
                conn.lookupByName(extra).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            print(
                f"{count:>2} domains: bulk {bulk[count]:.2f} ms, same-data loop "
                f"{same[count]:.2f} ms, cheapest loop {loop[count]:.2f} ms"
            )
    finally:
        remove_domains(lab, conn)
        conn.close()
    return write_report(
        "stats",
        ratio=same[max(COUNTS)] / bulk[max(COUNTS)],
        goal=f"same-data loop / bulk sample at {max(COUNTS)} domains; goal > 1",
        measured={"bulk_sample_ms": bulk, "note": "the lab's own guests run too, in both"},
        anchor={
            "same_data_loop_ms": same,
            "same_data_calls": "listAllDomains(active); per domain XMLDesc, blockStatsFlags "
            "per disk",
            "cheapest_loop_ms": loop,
            "cheapest_calls": "lookupByName, info, blockStats('vda') per bench domain",
        },
    )


if __name__ == "__main__":
    main()
