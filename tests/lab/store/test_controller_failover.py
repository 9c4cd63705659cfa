"""Two `hostsnap-controller serve` processes on one MariaDB, the CloudStack simulator pointed
at the lab and the real agent: the leader is killed (SIGKILL) while a policy run's first job
is in flight; the other takes over within the configured time, follows or sends again what
was in flight (with the same idempotency key) and sends the rest; each job reaches the agent
as exactly one agent job and makes exactly one snapshot."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.store import JobState, LeaseConfig, Store
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.lab import point_at_lab

from ..agent_process import AgentProcess, start_agent
from ..controller_support import controller, delete_snapshots_named, serve, stop, write_config

LEASE = LeaseConfig(duration=4.0, renew_interval=1.0, retry_interval=0.5, margin=0.5)
SLACK = 3.0  # process start-up and scheduling on a loaded machine


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("failover-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def wait_for(what: str, check, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_the_leader_dies_mid_run_and_the_other_finishes_it_without_sending_a_job_twice(
    agent: AgentProcess, lab: Lab, mariadb_url: str, tmp_path: Path
):
    lease = (
        f"duration = {LEASE.duration}\nrenew_interval = {LEASE.renew_interval}\n"
        f"retry_interval = {LEASE.retry_interval}\nmargin = {LEASE.margin}"
    )
    stub = agent.stub("ctl-operator")
    with CloudStackSimulator() as sim, Store.open(mariadb_url) as db:
        qcow2_vm, rbd_vm = point_at_lab(sim, lab.paths)
        config = write_config(tmp_path, sim, agent, mariadb_url, lease=lease)
        first = serve(config, "ctl-a", tmp_path / "a.log")
        second = None
        try:
            wait_for("ctl-a leads", lambda: _holder(db) == "ctl-a", 30)
            second = serve(config, "ctl-b", tmp_path / "b.log")
            added = controller(
                config, "policies", "add", "failover", "--interval", "HOURLY",
                "--schedule", away_from_now(), "--maxsnaps", "3",
                "--vm", qcow2_vm.id, "--vm", rbd_vm.id,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            started = controller(config, "run", "failover")
            assert started.returncode == 0, started.stderr
            jobs = db.jobs.find()
            assert len(jobs) == 2

            wait_for("a job in flight", lambda: any(j.state.in_flight for j in db.jobs.find()), 60)
            first.kill()
            killed_at = time.monotonic()
            wait_for("ctl-b leads", lambda: _holder(db) == "ctl-b", LEASE.takeover_within + SLACK)
            took_over = time.monotonic() - killed_at
            done = wait_for(
                "every job ended",
                lambda: (found := db.jobs.find()) and all(j.state.final for j in found) and found,
                300,
            )
        finally:
            stop(first)
            if second is not None:
                stop(second)
        try:
            assert [j.state for j in done] == [JobState.SUCCEEDED] * 2, [j.error for j in done]
            assert took_over <= LEASE.takeover_within + SLACK
            b_epoch = db.leases.info("controller").epoch  # type: ignore[union-attr]
            assert any(j.epoch == b_epoch for j in done), "ctl-b sent or followed nothing"
            keys = {j.idempotency_key for j in done}
            agent_jobs = [
                job
                for domain in (QCOW2_DOMAIN, RBD_DOMAIN)
                for job in stub.ListJobs(pb.ListJobsRequest(domain=domain, limit=1000)).jobs
                if job.idempotency_key in keys
            ]
            assert Counter(j.idempotency_key for j in agent_jobs) == dict.fromkeys(keys, 1)
            assert {j.agent_job_id for j in done} == {j.id for j in agent_jobs}
            name = done[0].params["name"]
            for domain in (QCOW2_DOMAIN, RBD_DOMAIN):
                listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain))
                made = [s for v in listed.volumes for s in v.snapshots if s.name == name]
                assert len(made) == 1, f"{domain}: {len(made)} snapshots named {name}"
        finally:
            delete_snapshots_named(agent, (QCOW2_DOMAIN, RBD_DOMAIN), "policy-")


def _holder(db: Store) -> str | None:
    info = db.leases.info("controller")
    return info.holder if info is not None and info.held else None


def away_from_now() -> str:
    """An HOURLY schedule's minute half an hour from now: the scheduler must not start a run
    of its own while the test's run is watched (a fixed minute did, once an hour)."""
    return f"{(datetime.now(UTC).minute + 30) % 60:02d}"
