"""Disk activity as rates between two samples of cumulative counters.

libvirt's bulk statistics and the kernel's disk counters only ever grow, except when a domain
restarts or a counter wraps: then the interval gives no rate rather than a negative or absurd
one. The reader keeps the previous sample; the clock is the one taken before each sample."""

from __future__ import annotations

from dataclasses import dataclass

Counters = dict[str, dict[str, dict[str, int]]]  # domain -> disk -> counter -> value
REQUIRED = {"rd.reqs", "wr.reqs", "rd.bytes", "wr.bytes"}


@dataclass(frozen=True)
class Sample:
    taken_at: float  # monotonic seconds, read before the statistics call
    counters: Counters


@dataclass(frozen=True)
class DiskRate:
    domain: str
    disk: str
    read_iops: float
    write_iops: float
    read_bytes_per_second: float
    write_bytes_per_second: float
    read_latency_ms: float | None  # per operation in the interval; None without operations
    write_latency_ms: float | None


def _latency_ms(times_ns: int, ops: int) -> float | None:
    return times_ns / ops / 1e6 if ops > 0 else None


def rates(previous: Sample, current: Sample) -> list[DiskRate]:
    """Rates for every disk present in both samples whose counters did not go back."""
    seconds = current.taken_at - previous.taken_at
    if seconds <= 0:
        return []
    found = []
    for domain, disks in sorted(current.counters.items()):
        for disk, now in sorted(disks.items()):
            before = previous.counters.get(domain, {}).get(disk)
            if before is None:
                continue
            delta = {k: now[k] - before[k] for k in now.keys() & before.keys()}
            if not delta.keys() >= REQUIRED or any(v < 0 for v in delta.values()):
                continue  # counters missing, or the domain restarted or a counter was reset
            found.append(
                DiskRate(
                    domain=domain,
                    disk=disk,
                    read_iops=delta.get("rd.reqs", 0) / seconds,
                    write_iops=delta.get("wr.reqs", 0) / seconds,
                    read_bytes_per_second=delta.get("rd.bytes", 0) / seconds,
                    write_bytes_per_second=delta.get("wr.bytes", 0) / seconds,
                    read_latency_ms=_latency_ms(delta.get("rd.times", 0), delta.get("rd.reqs", 0)),
                    write_latency_ms=_latency_ms(delta.get("wr.times", 0), delta.get("wr.reqs", 0)),
                )
            )
    return found
