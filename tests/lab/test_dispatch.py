"""The controller's dispatch end to end on the lab: a snapshot job of lab-qcow2 in the store,
CloudStack's view from the simulator (pointed at the lab's real guests), sent over mutual TLS
to a real hostsnap-agent process, followed to its end; the agent holds the snapshot and the
store's job ended SUCCEEDED. The snapshot is deleted through the agent afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.agents import AgentPool, TlsFiles
from controller.cloudstack import CloudStackClient, CloudStackConfig
from controller.dispatch import DispatchConfig, Dispatcher, Outcome, Result
from controller.inventory import Inventory
from controller.store import JobKind, JobSpec, JobState, Store
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.lab import point_at_lab

from .agent_process import AgentProcess, start_agent


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("dispatch-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def finished(stub, job: pb.Job) -> pb.Job:  # type: ignore[no-untyped-def]
    updates = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300))
    return updates[-1]


def dispatch_once(store: Store, sim: CloudStackSimulator, agent: AgentProcess) -> Outcome:
    lease = store.leases.acquire("controller", "lab-test", duration=600)
    assert lease is not None
    tls = TlsFiles(
        ca=agent.ca,
        cert=agent.directory / "ctl-operator.crt",
        key=agent.directory / "ctl-operator.key",
    )

    async def main() -> list[Outcome]:
        cloudstack = CloudStackClient(CloudStackConfig(sim.url, sim.api_key, sim.secret_key))
        # The lab host's CloudStack address is 127.0.0.1; the test's agent listens on a port
        # of its own.
        pool = AgentPool(lambda host: agent.endpoint, tls, call_timeout=60.0)
        dispatcher = Dispatcher(
            store, Inventory(cloudstack), pool, lambda: lease, DispatchConfig(call_timeout=60.0)
        )
        try:
            return await dispatcher.run_once()
        finally:
            await pool.close()

    (outcome,) = asyncio.run(main())
    return outcome


def test_a_snapshot_job_of_lab_qcow2_is_dispatched_over_mutual_tls_and_taken(
    agent: AgentProcess, lab: Lab, tmp_path: Path
):
    stub = agent.stub("ctl-operator")
    with CloudStackSimulator() as sim, Store.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        qcow2, _ = point_at_lab(sim, lab.paths, host_name="lab-host", host_ip="127.0.0.1")
        assert qcow2.host is not None
        job = store.jobs.create(
            JobSpec(
                JobKind.SNAPSHOT,
                qcow2.host.id,
                vm_id=qcow2.id,
                params={"quiesce": "required", "name": "dispatch-lab"},
                timeout=600,
            )
        )

        outcome = dispatch_once(store, sim, agent)

        done = store.jobs.get(job.id)
        assert done.agent_job_id, f"not sent: {outcome}"
        agent_job = stub.GetJob(pb.GetJobRequest(job_id=done.agent_job_id), timeout=30)
        snapshot_ids = [d.snapshot_id for d in agent_job.snapshot.disks]
        try:
            assert (outcome.result, done.state) == (Result.SUCCEEDED, JobState.SUCCEEDED), (
                outcome.detail
            )
            assert agent_job.idempotency_key == job.idempotency_key
            assert agent_job.snapshot.consistency == pb.CONSISTENCY_APPLICATION
            listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=QCOW2_DOMAIN), timeout=60)
            on_agent = {s.id: s for v in listed.volumes for s in v.snapshots}
            assert snapshot_ids and all(i in on_agent for i in snapshot_ids)
            assert {on_agent[i].name for i in snapshot_ids} == {"dispatch-lab"}
            audit = [json.loads(line) for line in agent.audit_log.read_text().splitlines()]
            assert any(
                (e["identity"], e["rpc"], e["result"]) == ("ctl-operator", "CreateSnapshot", "OK")
                for e in audit
            )
        finally:
            for snapshot_id in snapshot_ids:
                deleted = finished(
                    stub, stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id))
                )
                assert deleted.state == pb.JOB_STATE_SUCCEEDED, deleted.error.message
            listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=QCOW2_DOMAIN), timeout=60)
            left = {s.id for v in listed.volumes for s in v.snapshots} & set(snapshot_ids)
            assert not left, f"snapshots not cleaned up: {left}"
