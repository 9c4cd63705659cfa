"""The fault switch: its steps are an enum whose values are the HOSTSNAP_FAULT names of the
current release, and STEPS their strings. (The kill itself is proven by the lab.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agent import faults
from agent.errors import OperationFailed

RELEASED = (
    "after-overlay-created",
    "after-freeze",
    "during-rbd-snapshot",
    "after-libvirt-snapshot",
    "before-merge-back",
    "during-merge-back",
    "after-merge-back-pivot",
    "during-revert",
    "during-block-commit",
    "after-merge",
    "while-paused",
    "group-snapshot",
    "during-backup-upload",
    "after-backup-upload",
    "during-restore",
    "before-restore-publish",
)


def test_the_steps_are_the_released_names_and_steps_is_their_strings():
    assert faults.STEPS == RELEASED
    assert all(type(s) is str for s in faults.STEPS)
    assert [s.value for s in faults.Step] == list(RELEASED)
    assert faults.Step("after-freeze") is faults.Step.AFTER_FREEZE


def test_without_the_switch_a_point_does_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    for step in faults.Step:
        faults.point(step, "vm")


def test_fail_at_a_step_raises_there_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(faults.FAULT_ENV, "fail:after-merge")

    faults.point(faults.Step.AFTER_FREEZE)
    with pytest.raises(OperationFailed, match="injected failure at step after-merge"):
        faults.point(faults.Step.AFTER_MERGE)


def test_a_domain_suffix_limits_the_fault_to_that_domain(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(faults.FAULT_ENV, "fail:group-snapshot@vm-b")

    faults.point(faults.Step.GROUP_SNAPSHOT, "vm-a")
    with pytest.raises(OperationFailed):
        faults.point(faults.Step.GROUP_SNAPSHOT, "vm-b")


def test_a_name_that_is_no_fault_step_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    with pytest.raises(ValueError):
        faults.point("after-lunch")  # type: ignore[arg-type]


def _lab_strings() -> set[str]:
    """Every string literal of tests/lab (the constant parts of f-strings too)."""
    lab = Path(__file__).resolve().parents[1] / "lab"
    found: set[str] = set()
    for source in lab.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_step_has_a_lab_test_that_kills_the_agent_there():
    # A kill is HOSTSNAP_FAULT=<step>[@domain]; "fail:<step>" is another test (the undo).
    strings = _lab_strings()
    killed = {s for s in faults.STEPS if any(t == s or t.startswith(f"{s}@") for t in strings)}
    assert killed == set(faults.STEPS), f"no lab kill test at {set(faults.STEPS) - killed}"
