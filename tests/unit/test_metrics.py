"""The Prometheus text of one scrape: a domain's disks and the host's block devices (read from
this machine's kernel) in families of their own, so a domain named `host` is no device, and
the text lints clean with promtool."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.hypervisor.host_disks import HOST, host_disk_counters
from agent.jobs import Journal
from agent.service.metrics import metrics_registry
from tests.lab.agent_process import hwmon_fixture

COUNTERS = {
    "rd.reqs": 10,
    "wr.reqs": 20,
    "fl.reqs": 3,
    "rd.bytes": 4096,
    "wr.bytes": 8192,
    "rd.times": 1_000_000_000,
    "wr.times": 2_500_000_000,
    "fl.times": 500_000_000,
}


def backed_up(journal: Journal, volume: str, when: float, data: int, stored: int) -> None:
    job_id = uuid.uuid4().hex
    journal.start(job_id, "backup", volume.split("/")[0], {}, None)
    made = {"volume": volume, "backed_up": when, "data_bytes": data, "stored_bytes": stored}
    journal.succeed(job_id, {"backup": {**made, "stream_bytes": data + 17}, "target": "nfs"})


def scrape(tmp_path: Path) -> str:
    """One scrape with two domains, one of them named `host`, a temperature sensor, one
    freeze, one job, three backups of two volumes and a restore."""
    domains = {"host": {"vda": COUNTERS}, "web": {"vda": COUNTERS, "sdb": {"wr.reqs": 1}}}
    journal = Journal(tmp_path / "journal.db")
    backed_up(journal, "web/vda", 1000.0, 4096, 1024)
    backed_up(journal, "web/vda", 2000.0, 512, 512)
    backed_up(journal, "db/vda", 1500.0, 100, 0)  # all of it deduplicated
    restored = uuid.uuid4().hex
    journal.start(restored, "restore", "", {}, None)
    journal.succeed(restored, {"data_bytes": 4608})
    svc: Any = SimpleNamespace(
        host=SimpleNamespace(block_counters=lambda: (0.0, domains)),
        config=SimpleNamespace(sysfs_root=hwmon_fixture(tmp_path / "sysfs")),
        journal=journal,
    )
    registry = metrics_registry(svc)
    svc.observe_freeze(0.06)
    svc.observe_job("snapshot", "succeeded", 1.2)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_a_domain_named_host_is_a_domain_and_host_devices_have_their_own_family(tmp_path):
    found = samples(scrape(tmp_path))
    domain_ops = found["hostsnap_disk_operations_total"]
    assert ({"domain": "host", "disk": "vda", "operation": "write"}, 20.0) in domain_ops
    assert ({"domain": "host", "disk": "vda", "operation": "flush"}, 3.0) in domain_ops
    assert ({"domain": "web", "disk": "sdb", "operation": "write"}, 1.0) in domain_ops
    assert {labels["domain"] for labels, _ in domain_ops} == {"host", "web"}
    assert ({"domain": "host", "disk": "vda", "direction": "read"}, 4096.0) in found[
        "hostsnap_disk_bytes_total"
    ]
    assert ({"domain": "host", "disk": "vda", "operation": "write"}, 2.5) in found[
        "hostsnap_disk_time_seconds_total"
    ]

    _, host = host_disk_counters()
    devices = set(host[HOST])
    assert devices, "this machine has block devices"
    for name in ("operations", "bytes", "time_seconds"):
        host_samples = found[f"hostsnap_host_disk_{name}_total"]
        assert {labels["device"] for labels, _ in host_samples} == devices
        assert all(set(labels) in ({"device", "operation"}, {"device", "direction"})
                   for labels, _ in host_samples)  # fmt: skip
        assert all(value >= 0 for _, value in host_samples)
    operations = {labels["operation"] for labels, _ in found["hostsnap_host_disk_operations_total"]}
    assert operations == {"read", "write"}  # the kernel's counters have no flushes
    assert found["hostsnap_host_temperature_celsius"] == [
        ({"sensor": "hwmon0:coretemp", "label": "Package id 0"}, 47.0)
    ]
    assert found["hostsnap_freeze_duration_seconds_count"] == [({}, 1.0)]


def test_backups_are_counted_by_target_and_each_volumes_last_one_is_timed(tmp_path):
    found = samples(scrape(tmp_path))

    assert found["hostsnap_backups_total"] == [({"target": "nfs"}, 3.0)]
    moved = {labels["stage"]: value for labels, value in found["hostsnap_backup_bytes_total"]}
    assert moved == {"read": 4708.0, "written": 4759.0, "stored": 1536.0}
    assert found["hostsnap_backup_last_success_timestamp_seconds"] == [
        ({"volume": "db/vda", "target": "nfs"}, 1500.0),
        ({"volume": "web/vda", "target": "nfs"}, 2000.0),
    ]
    # The last backup's ratio; none for one that stored nothing.
    assert found["hostsnap_backup_last_compression_ratio"] == [
        ({"volume": "web/vda", "target": "nfs"}, 1.0)
    ]
    assert found["hostsnap_restores_total"] == [({}, 1.0)]
    assert found["hostsnap_restore_bytes_total"] == [({}, 4608.0)]


def test_the_metrics_text_lints_clean_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make env installs it (Debian's prometheus)"
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and not checked.stdout + checked.stderr, checked
