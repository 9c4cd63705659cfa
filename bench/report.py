"""Writes one benchmark's JSON report: its figures, the anchor's figures measured in the same
run, the headline ratio in the direction of the issue's goal, versions and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unavailable"


def versions() -> dict[str, str]:
    from agent import __version__

    return {
        "hostsnap": __version__,
        "python": platform.python_version(),
        "qemu-img": tool_version(["qemu-img", "--version"]),
        "libvirt": tool_version(["virsh", "--version"]),
        "ceph": tool_version(["ceph", "--version"]),
        "kernel": platform.release(),
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory_kib": mem_kib}


def write_report(
    name: str,
    *,
    ratio: float,
    goal: str,
    measured: dict[str, Any],
    anchor: dict[str, Any],
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """`ratio` is the headline figure, oriented as `goal` states it (e.g. "anchor / hostsnap
    stall, goal >= 10")."""
    report = {
        "benchmark": name,
        "ratio": ratio,
        "goal": goal,
        "measured": measured,
        "anchor": anchor,
        "versions": versions(),
        "machine": machine(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{name}: ratio {ratio:.2f} ({goal}) -> {path}")
    return path
