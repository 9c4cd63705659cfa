"""The host's block devices: the kernel's cumulative counters, through psutil."""

from __future__ import annotations

import time

import psutil

HOST = "host"


def host_disk_counters() -> tuple[float, dict[str, dict[str, dict[str, int]]]]:
    """(monotonic time taken before the read, {"host": {device: counters}}), counters named
    as libvirt's (rd/wr.reqs, rd/wr.bytes, rd/wr.times in nanoseconds)."""
    taken_at = time.monotonic()
    devices = psutil.disk_io_counters(perdisk=True) or {}
    return taken_at, {
        HOST: {
            name: {
                "rd.reqs": c.read_count,
                "wr.reqs": c.write_count,
                "rd.bytes": c.read_bytes,
                "wr.bytes": c.write_bytes,
                "rd.times": c.read_time * 1_000_000,
                "wr.times": c.write_time * 1_000_000,
            }
            for name, c in devices.items()
        }
    }
