"""bench/fanout in its smallest mode: the real dispatcher and store against fake agents in
another process; the report has its figures, every job succeeded on the host its VM runs on,
and a dispatcher that lets two jobs run on one host at once is caught."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bench import fanout
from bench.fanout_zone import build_zone


def quick(tmp_path: Path, **changes: Any) -> fanout.Options:
    return dataclasses.replace(fanout.QUICK, results_dir=tmp_path, **changes)


def test_quick_run_reports_every_job_succeeded_within_the_per_host_limit(tmp_path: Path) -> None:
    path = fanout.run(quick(tmp_path))

    report = json.loads(path.read_text())
    measured, anchor = report["measured"], report["anchor"]
    assert report["benchmark"] == "fanout_quick"
    assert (measured["hosts"], measured["volumes_per_host"], measured["jobs"]) == (5, 3, 15)
    assert measured["job_states"] == {"succeeded": 15}
    assert measured["per_host_violations"] == {}
    # One agent job per store job: a send again (same key) returns the job made first.
    assert measured["agent_jobs_started"] == 15
    calls = measured["agents"]["calls"]
    assert calls["CreateSnapshot"] == 15 + measured["repeated_keys"]
    assert anchor["bound_s"] == pytest.approx(3 * 0.05)
    # Nothing can beat the bound: each host ran its three jobs one after the other.
    assert measured["dispatch_s"] >= anchor["bound_s"]
    assert report["ratio"] == pytest.approx(measured["dispatch_s"] / anchor["bound_s"], rel=1e-2)
    assert measured["controller_cpu_s"] > 0
    assert measured["controller_peak_rss_mb"] > 0
    assert isinstance(measured["goal_met"], bool)
    assert "per_host=1" in anchor["binding_limit"]


def test_a_dispatcher_running_two_jobs_on_one_host_fails_the_bench(tmp_path: Path) -> None:
    with pytest.raises(fanout.FanoutFailed, match="per-host limit 1 broken"):
        fanout.run(quick(tmp_path, per_host=2))

    report = json.loads((tmp_path / "fanout_quick.json").read_text())
    assert report["measured"]["per_host_violations"]
    assert max(report["measured"]["per_host_violations"].values()) == 2


def test_vms_are_spread_over_hosts_and_not_grouped_by_name() -> None:
    zone = build_zone(hosts=4, vms_per_host=3)

    per_host = {h: len(domains) for h, domains in zone.layout.items()}
    assert per_host == {"kvm-0000": 3, "kvm-0001": 3, "kvm-0002": 3, "kvm-0003": 3}
    by_name = sorted(zone.inventory.vms.values(), key=lambda vm: vm.name)
    assert [vm.host_id for vm in by_name] != sorted(vm.host_id or "" for vm in by_name)
    for vm in by_name:
        (volume,) = (v for v in zone.inventory.volumes.values() if v.vm_id == vm.id)
        assert zone.layout[vm.host_id or ""][vm.instance_name] == [
            ("vda", f"/mnt/{volume.pool_id}/{volume.path}")
        ]
