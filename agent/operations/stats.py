"""Disk activity of the domains and the host over an interval, and host temperatures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import HostsnapError, InvalidArgument
from agent.hypervisor import domain_xml
from agent.hypervisor.host_disks import HOST, host_disk_counters
from agent.hypervisor.ports import Host
from agent.hypervisor.sensors import Temperature, read_temperatures
from agent.model import Volume
from agent.operations.services import Services
from agent.telemetry import DiskRate, Sample, rates

MAX_INTERVAL = 60.0


@dataclass(frozen=True)
class HostStats:
    taken_at: float  # wall clock of the second sample
    interval: float
    domain_disks: list[DiskRate]
    host_devices: list[DiskRate]
    temperatures: list[Temperature]


def interval(seconds: float) -> float:
    if seconds == 0:
        return 1.0
    if not 0 < seconds <= MAX_INTERVAL:
        raise InvalidArgument(f"interval_seconds must be above 0 and at most {MAX_INTERVAL:.0f}")
    return seconds


def sample(svc: Services) -> tuple[Sample, Sample]:
    return Sample(*svc.host.block_counters()), Sample(*host_disk_counters())


@dataclass(frozen=True)
class Reading:
    """The host's counters and sensors as they are now, cumulative (rates are the reader's):
    {domain: {disk: counters}}, {device: counters}, named as libvirt's (rd/wr/fl.reqs, rd/wr.
    bytes, rd/wr/fl.times in nanoseconds)."""

    domain_disks: dict[str, dict[str, dict[str, int]]]
    host_devices: dict[str, dict[str, int]]
    temperatures: list[Temperature]
    domains_unread: str | None = None  # why there are no domains' counters (libvirt's error)


def reading(svc: Services) -> Reading:
    """One reading for a scrape: without libvirt, the host's own devices and sensors still."""
    unread = None
    try:
        _, domains = svc.host.block_counters()
    except HostsnapError as e:
        domains, unread = {}, str(e)
    _, host = host_disk_counters()
    return Reading(domains, host.get(HOST, {}), read_temperatures(svc.config.sysfs_root), unread)


def measure(
    svc: Services,
    previous: tuple[Sample, Sample],
    current: tuple[Sample, Sample],
    wall_clock: Callable[[], float] = time.time,
) -> HostStats:
    return HostStats(
        taken_at=wall_clock(),
        interval=current[0].taken_at - previous[0].taken_at,
        domain_disks=rates(previous[0], current[0]),
        host_devices=rates(previous[1], current[1]),
        temperatures=read_temperatures(svc.config.sysfs_root),
    )


def hottest(sysfs_root: Path) -> float | None:
    """The highest temperature the host reports; None without sensors."""
    readings = read_temperatures(sysfs_root)
    return max((t.celsius for t in readings), default=None)


def pool_of(volume: Volume) -> str:
    """A file volume's pool is its directory; an RBD volume's is `rbd:<pool>`."""
    if volume.rbd is not None:
        return f"rbd:{volume.rbd.pool}"
    assert volume.path is not None
    return str(Path(volume.path).parent)


class PoolLoad:
    """The IOPS the running domains' disks make on each pool. Measured from the previous
    sample when that is recent enough, else over a fresh window: a caller asking every few
    seconds (admission's wait, a throttled merge) does not sleep each time."""

    MIN_SPAN = 0.5  # seconds between two samples for a rate worth the name
    MAX_AGE = 30.0  # an older sample says little about the load now

    def __init__(
        self, host: Host, seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._host, self._seconds, self._sleep = host, seconds, sleep
        self._last: Sample | None = None
        self._lock = threading.Lock()

    def __call__(self, pools: set[str]) -> dict[str, float]:
        with self._lock:
            current = Sample(*self._host.block_counters())
            previous = self._last
            if previous is None or not (
                self.MIN_SPAN <= current.taken_at - previous.taken_at <= self.MAX_AGE
            ):
                self._sleep(self._seconds)
                previous, current = current, Sample(*self._host.block_counters())
            self._last = current
        return _by_pool(self._host, pools, previous, current)


def _by_pool(host: Host, pools: set[str], first: Sample, second: Sample) -> dict[str, float]:
    where: dict[tuple[str, str], str] = {}
    for domain in second.counters:
        try:
            for volume in domain_xml.volumes(domain, host.xml(domain)):
                where[(domain, volume.target)] = pool_of(volume)
        except HostsnapError:
            continue  # the domain went away meanwhile
    load = dict.fromkeys(pools, 0.0)
    for rate in rates(first, second):
        pool = where.get((rate.domain, rate.disk))
        if pool in load:
            load[pool] += rate.read_iops + rate.write_iops
    return load
