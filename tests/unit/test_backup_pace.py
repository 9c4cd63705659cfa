"""A backup's reads slowed to the throttled bandwidth while the host runs hot, at full speed
again once it cools down, each change a step of the job (fake clock and temperatures)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.admission import Admission, AdmissionConfig
from agent.jobs import Journal
from agent.operations.backup_pace import ReadPace, Step

MIB = 1 << 20


class Host:
    def __init__(self) -> None:
        self.now = 0.0
        self.temperature = 75.0  # over 0.9 of the 80 °C ceiling: hot
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_reads_are_paced_while_hot_and_full_speed_once_cool(tmp_path: Path):
    host = Host()
    journal = Journal(tmp_path / "journal.db")
    journal.start("job", "backup", "vm", {}, None)
    admission = Admission(
        AdmissionConfig(temperature_ceiling=80.0, throttled_bandwidth_mib=16),
        hottest=lambda: host.temperature,
        pool_iops=lambda pools: {},
        clock=lambda: host.now,
    )
    svc: Any = SimpleNamespace(
        admission=admission, journal=journal, monotonic=lambda: host.now, sleep=host.sleep
    )
    pace = ReadPace(svc, "job", {"rbd:rbd"})

    for _ in range(16):  # 64 MiB in 4 MiB reads at 16 MiB/s: 4 s
        pace.read(4 * MIB)
    hot = host.slept
    host.temperature = 50.0
    host.now += ReadPace.CHECK_SECONDS
    for _ in range(16):
        pace.read(4 * MIB)

    assert 3.5 < hot <= 4.0 and host.slept == hot  # no sleep once cool
    speeds = [s.detail for s in journal.get("job").steps if s.name == Step.READ_SPEED]
    assert [s["mib"] for s in speeds] == [16, 0]
    assert "75.0 °C" in speeds[0]["reason"] and "room again" in speeds[1]["reason"]
