"""What the gRPC service adds to a snapshot: hostsnap-agent over its unix socket
(CreateSnapshot, then WatchJob to the end) against the same operation called in-process and
against `virsh snapshot-create-as --disk-only --atomic --no-metadata`, same run, same guest.
Goal: under 15 ms of overhead per call (gRPC median minus in-process median)."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from agent.config import AgentConfig
from agent.model import Quiesce, SnapshotRequest
from agent.operations import snapshot
from agent.operations.services import Services
from bench.bench_domain import bench_domain
from bench.report import write_report
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI
from hostsnap_lab.local_agent import local_agent

NAME = "bench-rpc"
TRIALS = 10
GOAL_MS = 15.0


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return 1000 * (time.perf_counter() - started)


def main() -> Path:
    lab = lab_stack.up()
    with bench_domain(lab, NAME), local_agent(lab) as sock:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(f"unix:{sock}"))
        svc = Services.open(AgentConfig(state_dir=lab.agent_state, ceph_conf=str(lab.ceph_conf)))

        def over_grpc() -> None:
            job = stub.CreateSnapshot(
                pb.CreateSnapshotRequest(domain=NAME, quiesce=pb.QUIESCE_NONE)
            )
            *_, last = stub.WatchJob(pb.WatchJobRequest(job_id=job.id))
            assert last.state == pb.JOB_STATE_SUCCEEDED, last.error.message

        def in_process() -> None:
            snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.NONE))

        def with_virsh(n: int) -> None:
            overlay = lab.paths.pool / f"{NAME}.virsh-{n}"
            flags = [
                "--disk-only",
                "--atomic",
                "--no-metadata",
                "--diskspec",
                f"vda,file={overlay}",
            ]
            subprocess.run(
                ["virsh", "-c", URI, "-q", "snapshot-create-as", NAME, *flags],
                check=True,
                capture_output=True,
            )

        try:
            over_grpc()  # warm the channel and the agent
            grpc_ms, local_ms, virsh_ms = [], [], []
            for n in range(TRIALS):
                grpc_ms.append(timed_ms(over_grpc))
                local_ms.append(timed_ms(in_process))
                virsh_ms.append(timed_ms(lambda n=n: with_virsh(n)))
                print(
                    f"trial {n + 1}: gRPC {grpc_ms[-1]:.1f} ms, in-process {local_ms[-1]:.1f} ms, "
                    f"virsh {virsh_ms[-1]:.1f} ms"
                )
        finally:
            svc.close()
    overhead = statistics.median(grpc_ms) - statistics.median(local_ms)
    return write_report(
        "rpc_overhead",
        ratio=overhead / GOAL_MS,
        goal=f"(gRPC median - in-process median) / {GOAL_MS:.0f} ms; goal < 1",
        measured={
            "grpc_snapshot_ms": grpc_ms,
            "in_process_snapshot_ms": local_ms,
            "overhead_ms": overhead,
        },
        anchor={
            "tool": "virsh snapshot-create-as --disk-only --atomic --no-metadata",
            "snapshot_ms": virsh_ms,
        },
    )


if __name__ == "__main__":
    main()
