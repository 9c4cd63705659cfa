"""Suite-wide policy: under CI a skipped lab test fails, so CI cannot go green by skipping."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

LAB_TESTS = Path(__file__).parent / "lab"

pytest_plugins = ["pytester"]


def running_under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LAB_TESTS in item.path.parents:
            item.add_marker(pytest.mark.lab)
    # Tests that take the lab down run after all others.
    items.sort(key=lambda item: item.get_closest_marker("lab_lifecycle") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and running_under_ci() and item.get_closest_marker("lab"):
        report.outcome = "failed"
        report.longrepr = f"a lab test may not skip under CI (CI=true): {report.longrepr}"
