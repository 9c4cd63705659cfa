"""The one block-job wait (agent/operations/block_jobs.py) as the merges and pulls use it:
progress, the pivot of an active commit once really ready, the abort on a cancel or at the
deadline, each with its caller's words."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.errors import Cancelled, OperationFailed
from agent.jobs import Journal
from agent.operations import block_jobs, consolidate, merge
from agent.operations.services import Services
from tests.unit.fakes import UnusedHost, UnusedRbd

TOP = "/pool/vm.qcow2.hostsnap-top"
BASE = "/pool/vm.qcow2"


def disk_xml(*chain: str, mirror_ready: bool = False) -> str:
    store = "".join(f"<backingStore type='file'><source file='{p}'/>" for p in chain[1:])
    store += "</backingStore>" * (len(chain) - 1)
    mirror = "<mirror job='active-commit' ready='yes'/>" if mirror_ready else ""
    return (
        "<domain><name>vm</name><devices><disk type='file' device='disk'>"
        f"<source file='{chain[0]}'/>{store}<target dev='vda'/>{mirror}</disk>"
        "</devices></domain>"
    )


class JobHost(UnusedHost):
    """A block job that reports `infos` in turn (then none), with the XML of `xmls` in turn
    (the last one repeated)."""

    def __init__(self, infos: list[dict[str, int] | None], xmls: list[str]) -> None:
        self.infos = list(infos)
        self.xmls = list(xmls)
        self.calls: list[str] = []

    def block_job(self, name: str, target: str) -> dict[str, int] | None:
        return self.infos.pop(0) if self.infos else None

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return self.xmls.pop(0) if len(self.xmls) > 1 else self.xmls[0]

    def block_job_pivot(self, name: str, target: str) -> None:
        self.calls.append("pivot")

    def block_job_abort(self, name: str, target: str) -> None:
        self.calls.append("abort")


def services(tmp_path: Path, host: JobHost, timeout: float = 3600.0) -> Services:
    config = AgentConfig(state_dir=tmp_path, block_job_timeout=timeout)
    svc = Services(config, host, UnusedRbd(), Journal(tmp_path / "journal.sqlite"))
    svc.monotonic = itertools.count(0.0, 1.0).__next__
    svc.sleep = lambda seconds: None
    return svc


def job(cur: int, end: int = 100) -> dict[str, int]:
    return {"type": 3, "cur": cur, "end": end, "bandwidth": 0}


def test_a_pull_reports_its_progress_until_it_ends(tmp_path: Path):
    host = JobHost([job(10), job(60), job(100)], [disk_xml(TOP)])
    seen: list[float] = []

    consolidate.wait_pull(services(tmp_path, host), "vm", "vda", seen.append, "job")

    assert seen == [0.1, 0.6, 1.0] and host.calls == []


def test_an_active_commit_is_pivoted_only_once_the_mirror_is_ready(tmp_path: Path):
    xmls = [disk_xml(TOP, BASE), disk_xml(TOP, BASE, mirror_ready=True)]
    host = JobHost([job(50), job(100), job(100)], xmls)

    merge.wait_commit(services(tmp_path, host), "vm", "vda", TOP, True, merge.Control("job"))

    assert host.calls == ["pivot"]


def test_an_active_commit_gone_with_the_chain_unchanged_was_aborted_outside(tmp_path: Path):
    host = JobHost([job(50)], [disk_xml(TOP, BASE)])

    with pytest.raises(Cancelled, match="aborted outside hostsnap") as raised:
        merge.wait_commit(services(tmp_path, host), "vm", "vda", TOP, True, merge.Control("job"))

    assert raised.value.reason == "BLOCK_JOB_ABORTED" and host.calls == []


def test_a_cancel_aborts_a_cancellable_merge_and_only_that(tmp_path: Path):
    host = JobHost([job(10)] * 5, [disk_xml(TOP, BASE)])
    svc = services(tmp_path, host)
    svc.cancellations.request("job")

    with pytest.raises(Cancelled, match=f"cancelled during the merge of {TOP}"):
        merge.wait_commit(svc, "vm", "vda", TOP, False, merge.Control("job", cancellable=True))
    assert host.calls == ["abort"]

    host.infos = [job(10), job(90)]
    merge.wait_commit(svc, "vm", "vda", TOP, False, merge.Control("job"))  # not cancellable
    assert host.calls == ["abort"]


def test_a_job_past_its_deadline_is_aborted_with_the_callers_words(tmp_path: Path):
    host = JobHost([job(10)] * 10, [disk_xml(TOP, BASE)])

    with pytest.raises(OperationFailed, match="block pull on vm/vda did not finish in 3 s"):
        consolidate.wait_pull(services(tmp_path, host, timeout=3), "vm", "vda", lambda f: None)

    assert host.calls == ["abort"]


def test_settle_gives_up_with_what_it_saw_last(tmp_path: Path):
    svc = services(tmp_path, JobHost([], [disk_xml(TOP)]))
    looks = iter(["a", "b", "c"])

    assert block_jobs.settle(svc, lambda: next(looks), lambda s: s == "b", ValueError) == "b"
    with pytest.raises(ValueError, match="still"):
        block_jobs.settle(svc, lambda: "still", lambda s: False, ValueError, seconds=2)
