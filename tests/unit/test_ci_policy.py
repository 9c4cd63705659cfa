"""Under CI, a lab test that skips fails the run; outside CI it stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPPING_LAB_TEST = """
import pytest

@pytest.mark.lab
def test_needs_the_lab():
    pytest.skip("no lab here")

def test_plain_unit_skip():
    pytest.skip("not relevant on this platform")
"""


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST.read_text().replace('pytest_plugins = ["pytester"]', ""))
    pytester.makeini("[pytest]\nmarkers =\n    lab: lab\n    lab_lifecycle: last\n")
    pytester.makepyfile(test_inner=SKIPPING_LAB_TEST)
    return pytester.runpytest_inprocess()


def test_skipped_lab_test_fails_under_ci(pytester: pytest.Pytester, monkeypatch):
    result = run_inner(pytester, monkeypatch, ci="true")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*a lab test may not skip under CI*no lab here*"])


def test_skipped_lab_test_is_a_skip_outside_ci(pytester: pytest.Pytester, monkeypatch):
    result = run_inner(pytester, monkeypatch, ci=None)
    result.assert_outcomes(skipped=2)
