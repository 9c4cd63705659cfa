"""Lightweight fake hostsnap-agents for bench/fanout: one real grpc.aio server per simulated
host, each on its own port of 127.0.0.1 (so every host is a distinct endpoint, with its own
channel from the controller), several hosts per process, speaking the real proto.

A snapshot job runs for a fixed time: CreateSnapshot answers RUNNING, WatchJob streams
RUNNING and then SUCCEEDED, GetJob tells the state now. The same idempotency key returns the
job made first. Each host counts the mutating jobs it runs at once; more than the per-host
limit at any moment is a violation the bench reports. Only the layout's domains exist on a
host, so a job sent to the wrong host fails NOT_FOUND.

Run as a process by the bench (`python -m bench.fake_agent_fleet LAYOUT --job-seconds D`):
it prints one JSON line of endpoints once every server listens, then answers each `stats`
line on stdin with one JSON line of counters, and stops at `stop` or end of input."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

# host name: {domain: [(disk target, image location), ...]}
Layout = dict[str, dict[str, list[tuple[str, str]]]]


@dataclass
class HostCounters:
    started: int = 0  # jobs made (a repeated key is not counted again)
    repeated_keys: int = 0  # CreateSnapshot with a key it had already: the same job returned
    running: int = 0
    most_running: int = 0
    overlapping_starts: int = 0  # jobs started while another of this host's ran
    first_start: float | None = None  # monotonic (CLOCK_MONOTONIC is system-wide on Linux)
    last_end: float | None = None
    calls: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "repeated_keys": self.repeated_keys,
            "running": self.running,
            "most_running": self.most_running,
            "overlapping_starts": self.overlapping_starts,
            "first_start": self.first_start,
            "last_end": self.last_end,
            "calls": dict(self.calls),
        }


class FleetAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """One simulated host's agent."""

    def __init__(
        self, name: str, domains: dict[str, list[tuple[str, str]]], job_seconds: float
    ) -> None:
        self.name = name
        self.domains = domains
        self.job_seconds = job_seconds
        self.counters = HostCounters()
        self.jobs: dict[str, Any] = {}  # id: pb.Job
        self.by_key: dict[str, str] = {}
        self.ended: dict[str, asyncio.Event] = {}

    async def GetHostInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.counters.calls["GetHostInfo"] += 1
        return pb.HostInfo(hostname=self.name, agent_version="fleet")

    async def ListVolumes(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.counters.calls["ListVolumes"] += 1
        if request.domain not in self.domains:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no domain {request.domain}")
        return pb.ListVolumesResponse(
            volumes=[
                pb.Volume(domain=request.domain, target=t, location=loc)
                for t, loc in self.domains[request.domain]
            ]
        )

    async def CreateSnapshot(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        counters = self.counters
        counters.calls["CreateSnapshot"] += 1
        if request.domain not in self.domains:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no domain {request.domain} on {self.name}"
            )
        key = request.idempotency_key
        if key and key in self.by_key:
            counters.repeated_keys += 1
            return self.jobs[self.by_key[key]]
        job_id = uuid.uuid4().hex
        if key:
            self.by_key[key] = job_id
        job = pb.Job(
            id=job_id,
            operation="snapshot",
            state=pb.JOB_STATE_RUNNING,
            domain=request.domain,
            idempotency_key=key,
            steps=["plan"],
        )
        self.jobs[job_id] = job
        self.ended[job_id] = asyncio.Event()
        now = time.monotonic()
        if counters.running:
            counters.overlapping_starts += 1
        counters.started += 1
        counters.running += 1
        counters.most_running = max(counters.most_running, counters.running)
        if counters.first_start is None:
            counters.first_start = now
        disks = list(request.disks) or [t for t, _ in self.domains[request.domain]]
        asyncio.get_running_loop().call_later(self.job_seconds, self._succeed, job_id, disks)
        return job

    def _succeed(self, job_id: str, disks: list[str]) -> None:
        job = self.jobs[job_id]
        if job.state != pb.JOB_STATE_RUNNING:
            return
        ended = pb.Job()
        ended.CopyFrom(job)
        ended.state = pb.JOB_STATE_SUCCEEDED
        ended.progress = 1.0
        ended.steps.append("done")
        ended.snapshot.CopyFrom(
            pb.SnapshotResult(
                disks=[pb.DiskSnapshot(target=d, snapshot_id=uuid.uuid4().hex) for d in disks]
            )
        )
        self.jobs[job_id] = ended
        self.counters.running -= 1
        self.counters.last_end = time.monotonic()
        self.ended[job_id].set()

    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.counters.calls["GetJob"] += 1
        if request.job_id not in self.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        return self.jobs[request.job_id]

    async def CancelJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.counters.calls["CancelJob"] += 1
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the bench cancels nothing")

    async def WatchJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.counters.calls["WatchJob"] += 1
        if request.job_id not in self.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        yield self.jobs[request.job_id]
        if self.jobs[request.job_id].state == pb.JOB_STATE_RUNNING:
            await self.ended[request.job_id].wait()
            yield self.jobs[request.job_id]


class Fleet:
    """The agents of one process, each on its own server and port."""

    def __init__(self, layout: Layout, job_seconds: float) -> None:
        self.agents = {
            name: FleetAgent(name, domains, job_seconds) for name, domains in layout.items()
        }
        self.servers: list[grpc.aio.Server] = []
        self.endpoints: dict[str, str] = {}

    async def start(self) -> dict[str, str]:
        for name, agent in self.agents.items():
            server = grpc.aio.server()
            agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.servers.append(server)
            self.endpoints[name] = f"127.0.0.1:{port}"
        return self.endpoints

    def stats(self) -> dict[str, Any]:
        return {name: agent.counters.as_dict() for name, agent in self.agents.items()}

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop(grace=None) for s in self.servers))


class FleetProcesses:
    """The bench's handle on the fleet: `processes` processes sharing the layout's hosts."""

    def __init__(self, layout: Layout, job_seconds: float, processes: int, workdir: Path) -> None:
        hosts = sorted(layout)
        count = max(1, min(processes, len(hosts)))
        self._procs: list[subprocess.Popen[str]] = []
        self.endpoints: dict[str, str] = {}
        root = Path(__file__).resolve().parent.parent
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
        )
        try:
            for n in range(count):
                part = {h: layout[h] for h in hosts[n::count]}
                path = workdir / f"fleet-{n}.json"
                path.write_text(json.dumps(part))
                argv = [sys.executable, "-m", "bench.fake_agent_fleet", str(path)]
                self._procs.append(
                    subprocess.Popen(
                        [*argv, "--job-seconds", str(job_seconds)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        cwd=root,
                        env=env,
                    )
                )
            for proc in self._procs:
                self.endpoints.update(self._read(proc)["endpoints"])
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake agent fleet {proc.pid} exited with {proc.wait()}")
        found: dict[str, Any] = json.loads(line)
        return found

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each host's counters."""
        merged: dict[str, dict[str, Any]] = {}
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write("stats\n")
            proc.stdin.flush()
            merged.update(self._read(proc)["stats"])
        return merged

    def cpu_seconds(self) -> float:
        """User + system CPU of the fleet's processes so far."""
        total = 0.0
        for proc in self._procs:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(layout: Layout, job_seconds: float) -> None:
    fleet = Fleet(layout, job_seconds)
    _emit({"endpoints": await fleet.start()})
    try:
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line == "stats":
                _emit({"stats": fleet.stats()})
            elif line in ("stop", ""):  # "" is the end of input: the bench went away
                return
    finally:
        await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", type=Path, help="JSON: {host: {domain: [[target, location]]}}")
    parser.add_argument("--job-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    raw = json.loads(args.layout.read_text())
    layout: Layout = {
        host: {dom: [(t, loc) for t, loc in disks] for dom, disks in domains.items()}
        for host, domains in raw.items()
    }
    asyncio.run(serve(layout, args.job_seconds))


if __name__ == "__main__":
    main()
