"""Running `hostsnap-controller` as its users do, against the CloudStack simulator and a real
agent process: its configuration file, `serve` as a process of its own, one-shot commands,
and the cleanup of the snapshots its policies made."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hostsnap.agent.v1 import agent_pb2 as pb
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.world import VirtualMachine, Volume

from .agent_process import AgentProcess


def write_config(
    directory: Path,
    sim: CloudStackSimulator,
    agent: AgentProcess,
    store_url: str,
    *,
    lease: str = "duration = 15.0\nrenew_interval = 5.0\nretry_interval = 2.0\nmargin = 1.0",
    groups: str = "",
) -> Path:
    port = agent.endpoint.rsplit(":", 1)[1]
    config = directory / "controller.toml"
    config.write_text(
        f"""[cloudstack]
url = "{sim.url}"
api_key = "{sim.api_key}"
secret_key = "{sim.secret_key}"

[store]
url = "{store_url}"

[agents]
port = {port}
ca = "{agent.ca}"
cert = "{agent.directory / "ctl-operator.crt"}"
key = "{agent.directory / "ctl-operator.key"}"
call_timeout = 120.0

[lease]
{lease}

[dispatch]
poll_interval = 0.5

[schedule]
inventory_interval = 5.0
policy_interval = 1.0
job_timeout = 600.0

[reconcile]
interval = 0
{groups}
"""
    )
    return config


def controller(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """One command, e.g. controller(config, "run", "nightly", "--wait")."""
    return subprocess.run(
        [sys.executable, "-m", "controller", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def controller_json(config: Path, *args: str) -> Any:
    done = controller(config, *args, "--json")
    assert done.returncode in (0, 1), f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def serve(config: Path, holder: str, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "controller", "serve", "--holder", holder, "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(0.5)
    assert process.poll() is None, log.read_text()
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def volumes_of(sim: CloudStackSimulator, vm: VirtualMachine) -> list[Volume]:
    with sim.world.lock:
        return [v for v in sim.world.volumes.values() if v.vm is vm]


def tags_of(sim: CloudStackSimulator, resource_id: str) -> dict[str, str]:
    with sim.world.lock:
        return {t.key: t.value for t in sim.world.tags if t.resource_id == resource_id}


def delete_snapshots_named(agent: AgentProcess, domains: tuple[str, ...], prefix: str) -> None:
    """Deletes what the test's policies made, newest first, and checks none is left."""
    stub = agent.stub("ctl-operator")
    for domain in domains:
        listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain), timeout=60)
        for volume in listed.volumes:
            for snapshot in volume.snapshots:  # newest first
                if not snapshot.name.startswith(prefix):
                    continue
                job = stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.id))
                *_, last = stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300)
                assert last.state == pb.JOB_STATE_SUCCEEDED, last.error.message
        left = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain), timeout=60)
        names = [s.name for v in left.volumes for s in v.snapshots if s.name.startswith(prefix)]
        assert not names, f"{domain}: snapshots left: {names}"
