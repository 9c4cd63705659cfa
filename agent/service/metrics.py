"""The Prometheus text endpoint: disk counters and temperatures read at each scrape, what
backups and restores moved (from the journal), and histograms of freeze and job durations
(those of backups and restores: hostsnap_job_duration_seconds{operation="backup"} and so on).
Names and units by Prometheus conventions; rates are Prometheus's to compute from the *_total
counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.operations import backup_stats, stats
from agent.operations.services import Services

log = logging.getLogger(__name__)

FREEZE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Up to hours: a full backup or a restore of a large volume.
JOB_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 7200.0, 14400.0
)  # fmt: skip
OPERATIONS = (("rd", "read"), ("wr", "write"), ("fl", "flush"))


class HostCollector(Collector):  # an ABC in Debian's 0.16, a Protocol in newer releases
    """Collected at each scrape: never cached, so a scrape shows the host as it is."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc

    def collect(self) -> Iterator[Any]:
        now = stats.reading(self._svc)
        if now.domains_unread is not None:
            log.warning("metrics: no domain statistics: %s", now.domains_unread)
        yield from _disk_families(
            "hostsnap_disk",
            "a domain's disk",
            ["domain", "disk"],
            (
                ([domain, disk], c)
                for domain, disks in now.domain_disks.items()
                for disk, c in disks.items()
            ),
        )
        # A family of their own: as domain="host" they would be one with a domain so named.
        yield from _disk_families(
            "hostsnap_host_disk",
            "a host block device",
            ["device"],
            (([device], c) for device, c in now.host_devices.items()),
        )

        temperatures = now.temperatures
        celsius = GaugeMetricFamily(
            "hostsnap_host_temperature_celsius",
            "A host temperature sensor",
            labels=["sensor", "label"],
        )
        high = GaugeMetricFamily(
            "hostsnap_host_temperature_high_celsius",
            "A sensor's high threshold",
            labels=["sensor", "label"],
        )
        critical = GaugeMetricFamily(
            "hostsnap_host_temperature_critical_celsius",
            "A sensor's critical threshold",
            labels=["sensor", "label"],
        )
        for t in temperatures:
            celsius.add_metric([t.sensor, t.label], t.celsius)
            if t.high is not None:
                high.add_metric([t.sensor, t.label], t.high)
            if t.critical is not None:
                critical.add_metric([t.sensor, t.label], t.critical)
        sensors = GaugeMetricFamily(
            "hostsnap_host_temperature_sensors", "Temperature sensors the host exposes (0: none)"
        )
        sensors.add_metric([], len(temperatures))
        yield from (celsius, high, critical, sensors)


def _disk_families(
    prefix: str,
    whose: str,
    labels: list[str],
    disks: Iterable[tuple[list[str], dict[str, int]]],
) -> tuple[CounterMetricFamily, ...]:
    """Operations, bytes and busy time of disks (`labels` their values), from counters named
    as libvirt's (rd/wr/fl.reqs, rd/wr.bytes, rd/wr/fl.times in nanoseconds)."""
    ops = CounterMetricFamily(
        f"{prefix}_operations", f"Disk operations of {whose}", labels=[*labels, "operation"]
    )
    data = CounterMetricFamily(
        f"{prefix}_bytes", f"Bytes moved by {whose}", labels=[*labels, "direction"]
    )
    busy = CounterMetricFamily(
        f"{prefix}_time_seconds",
        f"Time {whose} spent on operations",
        labels=[*labels, "operation"],
    )
    for values, counters in disks:
        for key, name in OPERATIONS:
            if f"{key}.reqs" in counters:
                ops.add_metric([*values, name], counters[f"{key}.reqs"])
            if f"{key}.times" in counters:
                busy.add_metric([*values, name], counters[f"{key}.times"] / 1e9)
        for key, name in OPERATIONS[:2]:
            if f"{key}.bytes" in counters:
                data.add_metric([*values, name], counters[f"{key}.bytes"])
    return ops, data, busy


class BackupCollector(Collector):
    """Backups and restores as the journal holds them, read at each scrape."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc

    def collect(self) -> Iterator[Any]:
        found = backup_stats.backup_stats(self._svc)
        count = CounterMetricFamily(
            "hostsnap_backups", "Backups made and verified, by target", labels=["target"]
        )
        moved = CounterMetricFamily(
            "hostsnap_backup_bytes",
            "Bytes of backups: read from primary storage, written to the repository engine, "
            "and stored (what the target took, deduplicated and compressed)",
            labels=["target", "stage"],
        )
        for target, totals in sorted(found.targets.items()):
            count.add_metric([target], totals.backups)
            moved.add_metric([target, "read"], totals.read_bytes)
            moved.add_metric([target, "written"], totals.written_bytes)
            moved.add_metric([target, "stored"], totals.stored_bytes)
        last = GaugeMetricFamily(
            "hostsnap_backup_last_success_timestamp_seconds",
            "When each volume's last backup was verified on the target",
            labels=["volume", "target"],
        )
        ratio = GaugeMetricFamily(
            "hostsnap_backup_last_compression_ratio",
            "Data read over bytes stored for each volume's last backup",
            labels=["volume", "target"],
        )
        for (volume, target), made in sorted(found.last.items()):
            last.add_metric([volume, target], made.backed_up)
            if made.stored_bytes:
                ratio.add_metric([volume, target], made.data_bytes / made.stored_bytes)
        restores = CounterMetricFamily("hostsnap_restores", "Restores that succeeded")
        restores.add_metric([], found.restores)
        restored = CounterMetricFamily(
            "hostsnap_restore_bytes", "Bytes of data written into restored images"
        )
        restored.add_metric([], found.restored_bytes)
        yield from (count, moved, last, ratio, restores, restored)


def serve_metrics(svc: Services, address: str) -> CollectorRegistry:
    """Starts the endpoint (a thread of its own) with `metrics_registry(svc)`."""
    registry = metrics_registry(svc)
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    log.info("metrics on http://%s/metrics", address)
    return registry


def metrics_registry(svc: Services) -> CollectorRegistry:
    """The host's collector and the duration histograms, hooked into the operations."""
    registry = CollectorRegistry()
    registry.register(HostCollector(svc))
    registry.register(BackupCollector(svc))
    freeze = Histogram(
        "hostsnap_freeze_duration_seconds",
        "How long guests were frozen for a snapshot",
        buckets=FREEZE_BUCKETS,
        registry=registry,
    )
    jobs = Histogram(
        "hostsnap_job_duration_seconds",
        "How long jobs took, by operation and outcome",
        labelnames=["operation", "result"],
        buckets=JOB_BUCKETS,
        registry=registry,
    )
    svc.observe_freeze = freeze.observe
    svc.observe_job = lambda operation, result, seconds: jobs.labels(operation, result).observe(
        seconds
    )
    return registry
