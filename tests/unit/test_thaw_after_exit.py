"""`hostsnap-agent --thaw-after-exit`: what the journal says a dead agent left frozen is
thawed, recorded, and judged by the recovery that follows; never under a live agent."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.jobs import Journal
from agent.model import Consistency, DomainState
from agent.operations import consistency
from agent.thaw_after_exit import AGENT_RUNS, agent_lock, run, thaw_left_frozen
from tests.unit.fakes import UnusedGuest, UnusedHost

DISK_ON_OVERLAY = """<domain><devices><disk type='file' device='disk'>
<source file='/pool/vm.new.qcow2'/><target dev='vda'/></disk></devices></domain>"""
DISK_BEFORE = DISK_ON_OVERLAY.replace("vm.new.qcow2", "vm.qcow2")


class Host(UnusedHost):
    def __init__(self, states: dict[str, DomainState], xml: str = DISK_ON_OVERLAY) -> None:
        self.states = states
        self.live_xml = xml

    def exists(self, name: str) -> bool:
        return name in self.states

    def state(self, name: str) -> tuple[DomainState, int]:
        return self.states[name], 0

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return self.live_xml


class Guest(UnusedGuest):
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def thaw(self) -> int:
        self.log.append(self.name)
        return 1

    def freeze_status(self) -> str:
        return "thawed"


def frozen_job(journal: Journal, domain: str, *steps: tuple[str, dict[str, Any]]) -> str:
    job_id = f"job-{domain}"
    journal.start(job_id, "snapshot", domain, {}, None)
    journal.record(job_id, "freeze")
    journal.record(job_id, "frozen")
    for name, detail in steps:
        journal.record(job_id, name, **detail)
    return job_id


def thawed_detail(journal: Journal, job_id: str) -> dict[str, Any]:
    step = journal.get(job_id).step("thawed")
    assert step is not None, f"{job_id} has no thawed step"
    return step.detail


def test_the_guests_left_frozen_are_thawed_and_the_thaw_recorded(tmp_path: Path):
    journal = Journal(tmp_path / "journal.sqlite")
    left = frozen_job(journal, "vm-a")
    frozen_job(journal, "vm-gone")
    frozen_job(journal, "vm-off")
    done = frozen_job(journal, "vm-done", ("thawed", {"frozen_seconds": 0.1}))
    host = Host(
        {"vm-a": DomainState.RUNNING, "vm-off": DomainState.SHUTOFF, "vm-done": DomainState.RUNNING}
    )
    thawed: list[str] = []

    assert thaw_left_frozen(journal, host, lambda d: Guest(thawed, d)) == ["vm-a"]

    assert thawed == ["vm-a"]
    step = journal.get(left).step("thawed")
    assert step is not None and step.detail["by"] == consistency.THAWED_AFTER_EXIT
    assert step.detail["switch_seen"] is None  # it was not switching
    assert [j.id for j in journal.jobs_left_frozen()] == ["job-vm-gone", "job-vm-off"]
    assert thawed_detail(journal, done) == {"frozen_seconds": 0.1}
    window = consistency.Window.for_recovered(journal.get(left), now=10**10)
    assert window.consistency == Consistency.APPLICATION
    assert window.frozen_seconds < 60  # until the thaw after the exit, not until recovery


def test_a_switch_not_seen_before_the_thaw_makes_the_snapshot_crash_consistent(tmp_path: Path):
    journal = Journal(tmp_path / "journal.sqlite")
    plan = {
        "live": True,
        "snapshot_ids": {"vda": "s"},
        "overlays": {"vda": "/pool/vm.new.qcow2"},
        "rbd_overlays": {},
    }
    seen = frozen_job(journal, "vm-a", ("plan", plan), ("switch-active", {}))
    thawed: list[str] = []
    clock = itertools.count(0.0, 1.0).__next__

    thaw_left_frozen(
        journal, Host({"vm-a": DomainState.RUNNING}), lambda d: Guest(thawed, d), clock
    )
    assert thawed_detail(journal, seen)["switch_seen"] is True

    other = Journal(tmp_path / "other.sqlite")
    unseen = frozen_job(other, "vm-a", ("plan", plan), ("switch-active", {}))
    host = Host({"vm-a": DomainState.RUNNING}, xml=DISK_BEFORE)
    thaw_left_frozen(other, host, lambda d: Guest(thawed, d), clock)

    assert thawed == ["vm-a", "vm-a"]  # thawed all the same, after the wait
    assert thawed_detail(other, unseen)["switch_seen"] is False
    assert (
        consistency.Window.for_recovered(other.get(unseen), now=0).consistency == Consistency.CRASH
    )


def test_nothing_is_thawed_while_an_agent_holds_the_state_directory(tmp_path: Path):
    config = AgentConfig(state_dir=tmp_path, libvirt_uri="test:///nonexistent")
    journal = Journal(config.journal_path)
    frozen_job(journal, "vm-a")

    with agent_lock(config):
        assert run(config) == AGENT_RUNS

    assert [j.id for j in journal.jobs_left_frozen()] == ["job-vm-a"]


def test_without_a_journal_there_is_nothing_to_thaw(tmp_path: Path):
    config = AgentConfig(state_dir=tmp_path / "never-ran")

    assert run(config) == 0
    assert not config.journal_path.exists()
