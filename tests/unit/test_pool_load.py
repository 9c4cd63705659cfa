"""PoolLoad measures a pool's IOPS without sleeping when its previous sample is recent."""

from __future__ import annotations

from agent.operations.stats import PoolLoad
from tests.unit.fakes import UnusedHost

DISK_XML = (
    "<domain><name>d</name><devices><disk type='file' device='disk'>"
    "<driver name='qemu' type='qcow2'/><source file='/pool/d.qcow2'/>"
    "<target dev='vda' bus='virtio'/></disk></devices></domain>"
)


class FakeHost(UnusedHost):
    """One domain whose disk makes 100 write requests per second of its clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def block_counters(self) -> tuple[float, dict[str, dict[str, dict[str, int]]]]:
        writes = int(100 * self.now)
        counters = {"rd.reqs": 0, "wr.reqs": writes, "rd.bytes": 0, "wr.bytes": 512 * writes}
        counters |= {"rd.times": 0, "wr.times": 0, "fl.reqs": 0, "fl.times": 0}
        return self.now, {"d": {"vda": counters}}

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return DISK_XML


def test_the_first_measure_waits_and_the_next_ones_use_the_previous_sample():
    host = FakeHost()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        host.now += seconds

    load = PoolLoad(host, seconds=1.0, sleep=sleep)
    assert load({"/pool"}) == {"/pool": 100.0}
    assert slept == [1.0]
    host.now += 2.0
    assert load({"/pool", "/other"}) == {"/pool": 100.0, "/other": 0.0}
    assert slept == [1.0]  # no second wait
    host.now += 60.0  # too old to say anything about now
    load({"/pool"})
    assert slept == [1.0, 1.0]
