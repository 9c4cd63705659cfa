"""The guest's writer shows up as write IOPS on its domain and disk, and stops showing when
it stops; a domain restart never gives a negative rate."""

from __future__ import annotations

import time

import libvirt

from agent.hypervisor.libvirt_host import LibvirtHost
from agent.telemetry import DiskRate, Sample, rates
from hostsnap_lab import guest_agent

from .support import start, stop


def sample(host: LibvirtHost) -> Sample:
    return Sample(*host.block_counters())


def rate_over(host: LibvirtHost, seconds: float) -> dict[tuple[str, str], DiskRate]:
    first = sample(host)
    time.sleep(seconds)
    return {(r.domain, r.disk): r for r in rates(first, sample(host))}


def test_the_guest_writer_is_seen_as_write_iops_and_stopping_it_brings_them_to_zero(
    conn: libvirt.virConnect,
):
    host = LibvirtHost("qemu:///system")
    dom = conn.lookupByName("lab-qcow2")
    busy = rate_over(host, 3)
    assert busy[("lab-qcow2", "vda")].write_iops > 0
    assert busy[("lab-rbd", "vda")].write_iops > 0
    guest_agent.exec_in_guest(dom, ["/bin/sh", "-c", "kill $(cat /run/writer.pid); sync"])
    try:
        time.sleep(1)  # writes already queued land
        quiet = rate_over(host, 3)
        assert quiet[("lab-qcow2", "vda")].write_iops == 0
        assert quiet[("lab-rbd", "vda")].write_iops > 0  # the other guest still writes
    finally:
        guest_agent.command(
            dom, "guest-exec", path="/bin/sh", arg=["-c", "/bin/writer >/dev/null 2>&1 &"]
        )


def test_a_domain_restart_never_gives_a_negative_rate(conn: libvirt.virConnect):
    host = LibvirtHost("qemu:///system")
    dom = conn.lookupByName("lab-qcow2")
    before = sample(host)
    stop(dom)
    start(dom)
    after = sample(host)
    found = {(r.domain, r.disk): r for r in rates(before, after)}
    # The restarted domain's counters began again from zero: that interval has no rate.
    assert (
        after.counters["lab-qcow2"]["vda"]["wr.reqs"]
        < before.counters["lab-qcow2"]["vda"]["wr.reqs"]
    )
    assert ("lab-qcow2", "vda") not in found
    assert found[("lab-rbd", "vda")].write_iops >= 0
