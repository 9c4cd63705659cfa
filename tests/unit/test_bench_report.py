"""The benchmark report carries the ratio, both sides' figures, versions and the machine."""

from __future__ import annotations

import json

from bench.report import write_report


def test_report_has_ratio_figures_versions_and_machine(tmp_path):
    path = write_report(
        "example",
        ratio=12.5,
        goal="naive stall / hostsnap stall, goal >= 10",
        measured={"stall_ms": [80, 82]},
        anchor={"stall_ms": [1000, 1025]},
        results_dir=tmp_path,
    )
    report = json.loads(path.read_text())
    assert path == tmp_path / "example.json"
    assert report["ratio"] == 12.5
    assert report["measured"] == {"stall_ms": [80, 82]}
    assert report["anchor"] == {"stall_ms": [1000, 1025]}
    assert report["versions"]["qemu-img"].startswith("qemu-img version")
    assert report["machine"]["cores"] >= 1
