"""The time-sync probe asks the first installed tool, by running it (fakes on PATH here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.hypervisor.time_sync import TimeSync, probe


def tool(directory: Path, name: str, output: str, code: int = 0) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def test_chrony_is_asked_first_and_its_normal_leap_status_is_synchronised(bin_dir: Path):
    tool(bin_dir, "chronyc", "Leap status     : Normal")
    tool(bin_dir, "timedatectl", "NTPSynchronized=no")
    assert probe() == TimeSync("chronyc", True)


def test_timesyncd_saying_no_is_not_synchronised(bin_dir: Path):
    tool(bin_dir, "timedatectl", "NTPSynchronized=no")
    assert probe() == TimeSync("timedatectl", False)


def test_a_failing_tool_is_not_synchronised(bin_dir: Path):
    tool(bin_dir, "ntpq", "*127.0.0.1", code=1)
    assert probe() == TimeSync("ntpq", False)


def test_without_any_tool_there_is_no_answer(bin_dir: Path):
    assert probe() is None
