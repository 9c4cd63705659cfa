"""Rates from cumulative counters, and temperatures from a real-format sysfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.hypervisor.host_disks import host_disk_counters
from agent.hypervisor.sensors import read_temperatures
from agent.telemetry import Sample, rates


def counters(reqs: int, nbytes: int, times_ns: int) -> dict[str, int]:
    return {"wr.reqs": reqs, "wr.bytes": nbytes, "wr.times": times_ns, "rd.reqs": 0, "rd.bytes": 0}


def test_rates_are_deltas_over_the_interval_with_latency_per_operation():
    before = Sample(10.0, {"vm": {"vda": counters(100, 409600, 1_000_000)}})
    after = Sample(12.0, {"vm": {"vda": counters(300, 1228800, 5_000_000)}})
    (rate,) = rates(before, after)
    assert (rate.domain, rate.disk) == ("vm", "vda")
    assert rate.write_iops == 100.0
    assert rate.write_bytes_per_second == 409600.0
    assert rate.write_latency_ms == pytest.approx(0.02)
    assert rate.read_iops == 0 and rate.read_latency_ms is None


def test_a_restarted_domain_or_a_new_disk_gives_no_rate_not_a_negative_one():
    before = Sample(1.0, {"vm": {"vda": counters(5000, 9, 9)}})
    after = Sample(2.0, {"vm": {"vda": counters(12, 9, 9), "vdb": counters(1, 1, 1)}})
    assert rates(before, after) == []
    assert rates(after, Sample(2.0, after.counters)) == []  # no time has passed


def test_a_disk_without_its_counters_gets_no_rate():
    # A busy domain answers a NOWAIT statistics call without them.
    before = Sample(1.0, {"vm": {"vda": {"wr.times": 5}}})
    after = Sample(2.0, {"vm": {"vda": counters(9000, 9000, 9000)}})
    assert rates(before, after) == []


def test_host_block_devices_are_read_from_the_kernel():
    taken_at, found = host_disk_counters()
    assert taken_at > 0
    assert found["host"], "this machine has block devices"
    assert all(v >= 0 for device in found["host"].values() for v in device.values())


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_temperatures_come_from_hwmon_and_thermal_zones_with_their_limits(tmp_path: Path):
    chip = tmp_path / "class" / "hwmon" / "hwmon0"
    write(chip / "name", "coretemp")
    write(chip / "temp1_input", "47000")
    write(chip / "temp1_label", "Package id 0")
    write(chip / "temp1_max", "84000")
    write(chip / "temp1_crit", "100000")
    write(chip / "temp2_input", "45500")
    zone = tmp_path / "class" / "thermal" / "thermal_zone0"
    write(zone / "type", "acpitz")
    write(zone / "temp", "27800")
    write(zone / "trip_point_0_type", "critical")
    write(zone / "trip_point_0_temp", "105000")

    found = {(t.sensor, t.label): t for t in read_temperatures(tmp_path)}

    package = found[("hwmon0:coretemp", "Package id 0")]
    assert (package.celsius, package.high, package.critical) == (47.0, 84.0, 100.0)
    assert found[("hwmon0:coretemp", "temp2")].high is None
    acpi = found[("thermal_zone0:acpitz", "acpitz")]
    assert (acpi.celsius, acpi.critical) == (27.8, 105.0)


def test_a_host_without_sensors_says_so_with_no_readings(tmp_path: Path):
    assert read_temperatures(tmp_path) == []
