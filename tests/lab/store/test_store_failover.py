"""Two controller processes on one MariaDB: one leads; when it dies (SIGKILL in the middle of a
dispatch) the other leads within the configured time and every job reaches the agent as one
agent job; a leader frozen between claim and send (SIGSTOP) sends nothing when it wakes up
after another took over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.store import JobKind, JobSpec, JobState, LeaseConfig, Store
from tests.mariadb.controller_process import read_events
from tests.mariadb.fake_agent import FakeAgent

REPO = Path(__file__).resolve().parents[3]
LEASE = LeaseConfig(duration=1.0, renew_interval=0.25, retry_interval=0.1, margin=0.2)
JOBS = 20
SLACK = 1.0  # process scheduling on a loaded machine


class Controllers:
    """Starts controller processes (tests/mariadb/controller_process.py); kills what is left."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.agent = FakeAgent(workdir / "agent.db")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, holder: str, *faults: str) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "tests.mariadb.controller_process",
            *("--url", self.url, "--holder", holder),
            *("--agent", str(self.agent.path), "--events", str(self.events_file(holder))),
            *("--duration", str(LEASE.duration), "--renew", str(LEASE.renew_interval)),
            *("--retry", str(LEASE.retry_interval), "--margin", str(LEASE.margin)),
            *faults,
        ]
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        with (self.workdir / f"{holder}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, cwd=REPO, env={**os.environ, "PYTHONPATH": path}, stderr=log
            )
        self.processes[holder] = process
        return process

    def events_file(self, holder: str) -> Path:
        return self.workdir / f"{holder}.events"

    def events(self, holder: str, kind: str | None = None) -> list[dict[str, Any]]:
        found = read_events(self.events_file(holder))
        return [e for e in found if kind is None or e["event"] == kind]

    def wait_for_event(self, holder: str, kind: str, timeout: float = 15) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            process = self.processes[holder]
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                log = (self.workdir / f"{holder}.log").read_text()
                pytest.fail(f"controller {holder} exited {process.returncode}:\n{log}")
            found = self.events(holder, kind)
            return found[0] if found else None

        return wait_for(seen, timeout, f"{holder}: {kind}")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait()


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None or found is False:
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)
    return found


@pytest.fixture
def controllers(mariadb_url: str, tmp_path: Path) -> Iterator[Controllers]:
    running = Controllers(mariadb_url, tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def jobs(mariadb_url: str) -> Iterator[tuple[Store, list[str]]]:
    with Store.open(mariadb_url) as store:
        keys = [store.jobs.create(JobSpec(JobKind.SNAPSHOT, "kvm-1")).idempotency_key]
        keys += [
            store.jobs.create(JobSpec(JobKind.SNAPSHOT, f"kvm-{i % 3}")).idempotency_key
            for i in range(1, JOBS)
        ]
        yield store, keys


def all_running(store: Store) -> bool:
    return len(store.jobs.find(states=[JobState.RUNNING])) == JOBS


def stopped(process: subprocess.Popen[bytes]) -> bool:
    return Path(f"/proc/{process.pid}/stat").read_text().split(")")[-1].split()[0] == "T"


def test_when_the_leader_is_killed_mid_dispatch_the_other_takes_over_and_no_job_runs_twice(
    controllers, jobs
):
    store, keys = jobs
    first = controllers.start("first", "--hang-after-send", "5")
    controllers.wait_for_event("first", "leader")
    controllers.start("second")
    hung = controllers.wait_for_event("first", "hanging")  # sent job 5, not yet recorded

    first.kill()
    killed_at = time.monotonic()
    leader = controllers.wait_for_event("second", "leader", timeout=LEASE.takeover_within + 5)
    wait_for(lambda: all_running(store), 20, "every job running")

    assert leader["at"] - killed_at <= LEASE.takeover_within + SLACK
    assert leader["epoch"] == controllers.events("first", "leader")[0]["epoch"] + 1
    first_sent = [e["key"] for e in controllers.events("first", "sent")]
    assert leader["adopted"] == first_sent == keys[:5]  # the dead leader's jobs, in flight
    assert leader["resend"] == [hung["key"]]  # the one it had not recorded as running
    # The agent made one job per key; only the job the dead leader had sent went out twice,
    # with the same idempotency key, and both sends got the same agent job.
    agent_jobs = controllers.agent.jobs()
    assert sorted(agent_jobs) == sorted(keys)
    sends = controllers.agent.sends_per_key()
    assert {key for key, count in sends.items() if count > 1} == {hung["key"]}
    assert sends[hung["key"]] == 2
    second_sent = [e["key"] for e in controllers.events("second", "sent")]
    assert second_sent == [hung["key"], *keys[5:]]
    for job in store.jobs.find():
        assert (job.state, job.agent_job_id) == (JobState.RUNNING, agent_jobs[job.idempotency_key])


def test_a_leader_frozen_after_claiming_a_job_sends_nothing_once_another_has_taken_over(
    controllers, jobs
):
    store, keys = jobs
    first = controllers.start("first", "--pause-before-send", "3")
    controllers.wait_for_event("first", "leader")
    controllers.start("second")
    paused = controllers.wait_for_event("first", "pausing")  # claimed job 3, not sent
    wait_for(lambda: stopped(first), 5, "first to stop")

    leader = controllers.wait_for_event("second", "leader", timeout=LEASE.takeover_within + 5)
    wait_for(lambda: all_running(store), 20, "every job running")
    first.send_signal(signal.SIGCONT)
    refused = controllers.wait_for_event("first", "refused")
    controllers.wait_for_event("first", "lost")

    assert leader["adopted"] == keys[:3] and leader["resend"] == [paused["key"]] == keys[2:3]
    assert (refused["key"], refused["epoch"]) == (paused["key"], leader["epoch"] - 1)
    assert controllers.agent.sends_per_key() == dict.fromkeys(keys, 1)  # each sent once
    assert paused["key"] not in {e["key"] for e in controllers.events("first", "sent")}
    assert store.jobs.by_key(paused["key"]).epoch == leader["epoch"]
