"""Disk activity of the domains and the host over an interval, and host temperatures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import InvalidArgument
from agent.hypervisor.host_disks import host_disk_counters
from agent.hypervisor.sensors import Temperature, read_temperatures
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
