"""The steps typed last (image snapshot, pause, admission, merge bandwidth) read journal entries
as the current release writes them, literal names and keys, and write exactly those again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import admission, steps
from agent.config import AgentConfig
from agent.jobs import Job, JobState, Journal
from agent.model import DomainState, RbdSnap, RbdSource
from agent.operations import image_snapshot, merge_speed, pause, quiesce
from agent.operations.services import Services
from agent.service import convert
from tests.unit.fakes import UnusedHost, UnusedRbd

IMAGE_REQUEST = {
    "images": ["rbd/a", "rbd/b"],
    "quiesce": "preferred",
    "name": "n",
    "idempotency_key": None,
}


def journal_with(
    tmp_path: Path,
    *written: tuple[str, dict[str, Any]],
    operation: str = "snapshot",
    domain: str = "",
    request: dict[str, Any] | None = None,
) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.start("job", operation, domain, request or {}, None)
    for name, detail in written:
        journal.record("job", name, **detail)
    return journal


def written(journal: Journal) -> list[tuple[str, dict[str, Any]]]:
    return [(s.name, s.detail) for s in journal.get("job").steps]


class Rbd(UnusedRbd):
    def __init__(self, made: dict[str, list[str]]) -> None:
        self.made = made
        self.removed: list[tuple[str, str]] = []

    def snapshots(self, source: RbdSource) -> list[RbdSnap]:
        return [RbdSnap(n, 1, 0.0, False) for n in self.made.get(source.spec, [])]

    def remove_snapshot(self, source: RbdSource, name: str) -> None:
        self.removed.append((source.spec, name))

    def close(self) -> None:
        pass


class Host(UnusedHost):
    def __init__(self, state: DomainState) -> None:
        self.domain_state = state
        self.resumed: list[str] = []

    def exists(self, name: str) -> bool:
        return True

    def state(self, name: str) -> tuple[DomainState, int]:
        return self.domain_state, 0

    def suspend(self, name: str) -> None:
        pass

    def resume(self, name: str) -> None:
        self.resumed.append(name)


def services(
    tmp_path: Path, journal: Journal, rbd: Rbd | None = None, host: Host | None = None
) -> Services:
    return Services(
        config=AgentConfig(state_dir=tmp_path),
        host=host or UnusedHost(),
        rbd=rbd or Rbd({}),
        journal=journal,
    )


# Image snapshot: plan (images), rbd-snapshot (image, name), undo.


def test_an_image_snapshots_plan_of_the_current_form_reads_back_typed(tmp_path: Path):
    journal = journal_with(
        tmp_path,
        ("plan", {"images": {"rbd/a": "s1", "rbd/b": "s2"}}),
        ("rbd-snapshot", {"image": "rbd/a", "name": "hostsnap-s1"}),
        ("undo", {}),
        request=IMAGE_REQUEST,
    )
    job = journal.get("job")

    plan = steps.read(job, image_snapshot.Step.PLAN, image_snapshot.Plan)
    assert plan == image_snapshot.Plan({"rbd/a": "s1", "rbd/b": "s2"})
    made = steps.read(job, image_snapshot.Step.RBD_SNAPSHOT, image_snapshot.RbdSnapshot)
    assert made == image_snapshot.RbdSnapshot("rbd/a", "hostsnap-s1")
    assert steps.reached(job, image_snapshot.Step.UNDO)


def test_an_image_snapshots_steps_are_written_in_the_current_form(tmp_path: Path):
    journal = journal_with(tmp_path, request=IMAGE_REQUEST)

    steps.write(journal, "job", image_snapshot.Step.PLAN, image_snapshot.Plan({"rbd/a": "s1"}))
    steps.write(
        journal,
        "job",
        image_snapshot.Step.RBD_SNAPSHOT,
        image_snapshot.RbdSnapshot("rbd/a", "hostsnap-s1"),
    )
    steps.write(journal, "job", image_snapshot.Step.UNDO)

    assert written(journal) == [
        ("plan", {"images": {"rbd/a": "s1"}}),
        ("rbd-snapshot", {"image": "rbd/a", "name": "hostsnap-s1"}),
        ("undo", {}),
    ]


def test_an_image_snapshot_of_the_current_form_with_every_snapshot_made_is_completed(
    tmp_path: Path,
):
    journal = journal_with(
        tmp_path,
        ("plan", {"images": {"rbd/a": "s1", "rbd/b": "s2"}}),
        ("rbd-snapshot", {"image": "rbd/a", "name": "hostsnap-s1"}),
        ("rbd-snapshot", {"image": "rbd/b", "name": "hostsnap-s2"}),
        request=IMAGE_REQUEST,
    )
    rbd = Rbd({"rbd/a": ["hostsnap-s1"], "rbd/b": ["hostsnap-s2"]})
    svc = services(tmp_path, journal, rbd)

    state, _ = image_snapshot.recover(svc, journal.get("job"))

    assert state == JobState.SUCCEEDED and rbd.removed == []
    assert {s.id for s in journal.snapshots("")} == {"s1", "s2"}
    journal.close()


@pytest.mark.parametrize(
    "tail",
    [
        [("rbd-snapshot", {"image": "rbd/a", "name": "hostsnap-s1"})],  # b not made
        [
            ("rbd-snapshot", {"image": "rbd/a", "name": "hostsnap-s1"}),
            ("rbd-snapshot", {"image": "rbd/b", "name": "hostsnap-s2"}),
            ("undo", {}),  # both made, then the job failed
        ],
    ],
)
def test_an_image_snapshot_of_the_current_form_not_complete_or_undone_is_removed(
    tmp_path: Path, tail: list[tuple[str, dict[str, Any]]]
):
    journal = journal_with(
        tmp_path,
        ("plan", {"images": {"rbd/a": "s1", "rbd/b": "s2"}}),
        *tail,
        request=IMAGE_REQUEST,
    )
    made = {"rbd/a": ["hostsnap-s1"]}
    if len(tail) > 1:
        made["rbd/b"] = ["hostsnap-s2"]
    rbd = Rbd(made)

    state, _ = image_snapshot.recover(services(tmp_path, journal, rbd), journal.get("job"))

    assert state == JobState.FAILED
    assert sorted(rbd.removed) == [("rbd/a", "hostsnap-s1"), ("rbd/b", "hostsnap-s2")]
    journal.close()


def test_an_image_snapshot_without_its_plan_changed_nothing(tmp_path: Path):
    journal = journal_with(tmp_path, ("admitted", {"pools": ["rbd:rbd"]}), request=IMAGE_REQUEST)

    state, _ = image_snapshot.recover(services(tmp_path, journal), journal.get("job"))

    assert state == JobState.FAILED
    journal.close()


# Pause: paused (why), resumed (paused_seconds, or by).


def test_pauses_of_the_current_form_read_back(tmp_path: Path):
    journal = journal_with(
        tmp_path,
        ("paused", {"why": "merge back"}),
        ("resumed", {"paused_seconds": 0.25}),
        ("paused", {"why": "merge back"}),
        domain="vm",
    )
    job = journal.get("job")

    assert steps.read_all(job, pause.Step.PAUSED, pause.Paused) == [pause.Paused("merge back")] * 2
    assert steps.read(job, pause.Step.RESUMED, pause.Resumed) == pause.Resumed(0.25)
    assert pause.left_paused(job)
    journal.close()


def test_recovery_resumes_a_domain_the_journal_left_paused_and_writes_the_current_form(
    tmp_path: Path,
):
    journal = journal_with(tmp_path, ("paused", {"why": "merge back"}), domain="vm")
    host = Host(DomainState.PAUSED)
    svc = services(tmp_path, journal, host=host)

    pause.resume_after_crash(svc, journal.get("job"))

    assert host.resumed == ["vm"]
    assert written(journal)[-1] == ("resumed", {"by": "recovery"})
    assert not pause.left_paused(journal.get("job"))
    assert steps.read(journal.get("job"), pause.Step.RESUMED, pause.ResumedBy) == (
        pause.ResumedBy("recovery")
    )
    journal.close()


def test_a_pause_is_written_in_the_current_form(tmp_path: Path):
    journal = journal_with(tmp_path, domain="vm")
    host = Host(DomainState.RUNNING)
    ticks = iter([10.0, 10.5])
    svc = services(tmp_path, journal, host=host)
    svc.monotonic = lambda: next(ticks)

    with pause.paused(svc, "job", "vm", "merge back"):
        pass

    assert written(journal) == [
        ("paused", {"why": "merge back"}),
        ("resumed", {"paused_seconds": 0.5}),
    ]
    journal.close()


# Admission: admission-wait (reason), admission-refused (reason, retry_after), admitted (pools).


def test_admission_steps_are_written_in_the_current_form():
    recorded: list[tuple[str, dict[str, Any]]] = []
    now = [0.0]
    hot = admission.Admission(
        admission.AdmissionConfig(temperature_ceiling=85, wait_timeout=2, poll_interval=1),
        hottest=lambda: 95.0 if now[0] < 1 else 40.0,
        pool_iops=lambda pools: {},
        clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
    )

    with hot.admitted("j", {"/b", "/a"}, lambda step, **d: recorded.append((step, d))):
        pass
    with pytest.raises(admission.NotAdmitted):
        now[0] = 0.0
        with hot.admitted("k", {"/a"}, lambda step, **d: recorded.append((step, d)), wait=False):
            pass

    assert [name for name, _ in recorded] == ["admission-wait", "admitted", "admission-refused"]
    assert set(recorded[0][1]) == {"reason"}
    assert recorded[1][1] == {"pools": ["/a", "/b"]}
    assert set(recorded[2][1]) == {"reason", "retry_after"}
    assert all(type(name) is str for name, _ in recorded)


def test_a_refused_job_of_the_current_form_reports_its_retry_after(tmp_path: Path):
    journal = journal_with(
        tmp_path,
        ("admission-wait", {"reason": "host hot"}),
        ("admission-refused", {"reason": "host hot", "retry_after": 30.0}),
    )
    journal.fail("job", "not admitted", "NOT_ADMITTED")
    job: Job = journal.get("job")

    refused = steps.read(job, admission.Step.ADMISSION_REFUSED, admission.AdmissionRefused)
    assert refused == admission.AdmissionRefused("host hot", 30.0)
    assert convert.job(job).error.retry_after_seconds == 30.0
    journal.close()


def test_admitted_of_the_current_form_reads_back(tmp_path: Path):
    journal = journal_with(tmp_path, ("admitted", {"pools": ["/a", "rbd:rbd"]}))

    admitted = steps.read(journal.get("job"), admission.Step.ADMITTED, admission.Admitted)

    assert admitted == admission.Admitted(["/a", "rbd:rbd"])
    journal.close()


# Merge speed: bandwidth (mib, reason).


def test_a_bandwidth_step_of_the_current_form_reads_back_and_is_written_the_same(tmp_path: Path):
    journal = journal_with(tmp_path, ("bandwidth", {"mib": 16, "reason": "host hot"}))

    old = steps.read(journal.get("job"), merge_speed.Step.BANDWIDTH, merge_speed.Bandwidth)
    steps.write(journal, "job", merge_speed.Step.BANDWIDTH, merge_speed.Bandwidth(0, "as asked"))

    assert old == merge_speed.Bandwidth(16, "host hot")
    assert written(journal)[-1] == ("bandwidth", {"mib": 0, "reason": "as asked"})
    journal.close()


# jobs.LEFT_FROZEN names the freeze's steps in SQL (jobs.py is below the operations).


def test_the_journals_left_frozen_query_names_the_freezes_steps():
    from agent import jobs

    assert f"s.name = '{quiesce.Step.FREEZE.value}'" in jobs.LEFT_FROZEN
    assert f"s.name = '{quiesce.Step.THAWED.value}'" in jobs.LEFT_FROZEN
