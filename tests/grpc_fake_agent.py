"""A fake hostsnap-agent speaking the real proto over a real grpc.aio server on localhost, for
the controller's unit tests. It keeps jobs by idempotency key like the real agent, counts every
call, records how many of its jobs ran at once, and fails on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc


@dataclass
class Send:
    key: str
    domain: str
    disks: tuple[str, ...]
    quiesce: int
    rbd_images: tuple[str, ...] = ()  # a snapshot of RBD images without a domain


@dataclass
class FakeAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    name: str
    job_seconds: float = 0.005  # how long each job runs; None-like 0 ends it at once
    hang: bool = False  # jobs never end by themselves
    cancel_too_late: bool = False  # a cancelled job succeeds instead
    outcome: str = "succeeded"  # or "failed"
    down: bool = False  # every call fails UNAVAILABLE
    host_info_delay: float = 0.0  # GetHostInfo answers after this long
    # Codes the next CreateSnapshot calls fail with, before doing anything.
    refuse: list[grpc.StatusCode] = field(default_factory=list)
    # The next CreateSnapshot calls make the job and then fail UNAVAILABLE (a lost reply).
    lose_replies: int = 0
    volumes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # domain: target, loc
    # ListSnapshots answers: domain: pb.VolumeSnapshots, one per disk (filtered by `disks`).
    snapshots: dict[str, list[Any]] = field(default_factory=dict)
    sends: list[Send] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    running: int = 0
    most_running: int = 0
    jobs: dict[str, Any] = field(default_factory=dict)  # id: pb.Job
    by_key: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Consistency groups: domain -> group id of each hold in force, and the guests frozen.
    holds: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    refuse_freeze: bool = False  # FreezeForGroup fails FAILED_PRECONDITION, freezing nothing
    thaws: list[str] = field(default_factory=list)  # domains ThawGroup was called for
    deleted: list[str] = field(default_factory=list)  # snapshot ids DeleteSnapshot removed
    backed_up: list[tuple[str, str]] = field(default_factory=list)  # BackupSnapshot's (id, target)
    # Each target's backups, oldest first; BackupSnapshot adds one (volume "<domain>/vda"),
    # over the volume's last unless full, and DeleteBackup removes them.
    backups: dict[str, list[Any]] = field(default_factory=dict)
    snapshot_names: dict[str, str] = field(default_factory=dict)  # snapshot id: its name
    restored: list[tuple[str, str]] = field(default_factory=list)  # RestoreBackup's (id, to)
    thaw_delay: float = 0.0  # ThawGroup answers after this long
    hold_seconds: list[float] = field(default_factory=list)  # of each FreezeForGroup
    list_jobs_error: grpc.StatusCode | None = None  # ListJobs fails with this

    async def _gate(self, rpc: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[rpc] += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is down")

    async def GetHostInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("GetHostInfo", context)
        await asyncio.sleep(self.host_info_delay)
        return pb.HostInfo(hostname=self.name, agent_version="fake")

    async def ListVolumes(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("ListVolumes", context)
        found = self.volumes.get(request.domain, [])
        return pb.ListVolumesResponse(
            volumes=[pb.Volume(domain=request.domain, target=t, location=loc) for t, loc in found]
        )

    async def ListSnapshots(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("ListSnapshots", context)
        chosen = set(request.disks)
        found = self.snapshots.get(request.domain, [])
        return pb.ListSnapshotsResponse(
            volumes=[v for v in found if not chosen or v.volume.target in chosen]
        )

    async def CreateSnapshot(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("CreateSnapshot", context)
        key = request.idempotency_key
        self.sends.append(
            Send(
                key,
                request.domain,
                tuple(request.disks),
                request.quiesce,
                tuple(request.rbd_images),
            )
        )
        if self.refuse:
            code = self.refuse.pop(0)
            await context.abort(
                code, f"refused with {code.name}", trailing_metadata=(("hostsnap-reason", "TEST"),)
            )
        if request.group_id and self.holds.get(request.domain) != request.group_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.domain} is not held for group {request.group_id}",
                trailing_metadata=(("hostsnap-reason", "GROUP_NOT_HELD"),),
            )
        if key not in self.by_key:
            job_id = uuid.uuid4().hex
            self.by_key[key] = job_id
            self.jobs[job_id] = pb.Job(
                id=job_id,
                operation="snapshot",
                state=pb.JOB_STATE_RUNNING,
                domain=request.domain,
                idempotency_key=key,
            )
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            if not self.hang:
                task = asyncio.create_task(self._run(job_id, tuple(request.rbd_images)))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        if self.lose_replies:
            self.lose_replies -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost")
        return self.jobs[self.by_key[key]]

    async def _run(self, job_id: str, images: tuple[str, ...] = ()) -> None:
        await asyncio.sleep(self.job_seconds)
        if self.outcome == "succeeded":
            disks = [
                pb.DiskSnapshot(
                    target=image,
                    kind=pb.VOLUME_KIND_RBD,
                    snapshot_id=uuid.uuid4().hex,
                    content=f"{image}@hostsnap-{uuid.uuid4().hex}",
                    active_image=image,
                    method="rbd-stopped",
                )
                for image in images
            ] or [pb.DiskSnapshot(target="vda", snapshot_id=uuid.uuid4().hex)]
            await self._end(job_id, pb.JOB_STATE_SUCCEEDED, snapshot=pb.SnapshotResult(disks=disks))
        else:
            error = pb.JobError(code="INTERNAL", reason="RBD_FAILED", message="rbd said no")
            await self._end(job_id, pb.JOB_STATE_FAILED, error=error)

    async def _end(self, job_id: str, state: int, **result: Any) -> None:
        job = self.jobs[job_id]
        if job.state != pb.JOB_STATE_RUNNING:
            return
        ended = pb.Job()
        ended.CopyFrom(job)
        ended.state = state
        for name, value in result.items():
            getattr(ended, name).CopyFrom(value)
        self.jobs[job_id] = ended
        self.running -= 1
        async with self.changed:
            self.changed.notify_all()

    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("GetJob", context)
        if request.job_id not in self.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        return self.jobs[request.job_id]

    async def ListJobs(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("ListJobs", context)
        if self.list_jobs_error is not None:
            await context.abort(self.list_jobs_error, "ListJobs refused")
        jobs = [
            job
            for job in reversed(self.jobs.values())  # newest first
            if (not request.domain or job.domain == request.domain)
            and (not request.state or job.state == request.state)
        ]
        return pb.ListJobsResponse(jobs=jobs[: request.limit or 100])

    async def CancelJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("CancelJob", context)
        self.cancelled.append(request.job_id)
        if self.cancel_too_late:  # the job passed its last safe point: it ends anyway
            disk = pb.DiskSnapshot(target="vda", snapshot_id=uuid.uuid4().hex)
            snapshot = pb.SnapshotResult(disks=[disk])
            await self._end(request.job_id, pb.JOB_STATE_SUCCEEDED, snapshot=snapshot)
        await self._end(request.job_id, pb.JOB_STATE_CANCELLED)
        return self.jobs[request.job_id]

    async def WatchJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("WatchJob", context)
        if request.job_id not in self.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        yield self.jobs[request.job_id]
        while self.jobs[request.job_id].state == pb.JOB_STATE_RUNNING:
            async with self.changed:
                await self.changed.wait()
            yield self.jobs[request.job_id]

    async def FreezeForGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("FreezeForGroup", context)
        self.hold_seconds.append(request.hold_seconds)
        held = self.holds.get(request.domain)
        if self.refuse_freeze or (held is not None and held != request.group_id):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.domain} cannot be held",
                trailing_metadata=(("hostsnap-reason", "DOMAIN_HELD"),),
            )
        self.holds[request.domain] = request.group_id
        self.frozen.add(request.domain)
        return pb.GroupFreeze(
            domain=request.domain,
            group_id=request.group_id,
            job_id=uuid.uuid4().hex,
            frozen=True,
            remaining_seconds=request.hold_seconds,
            filesystems=1,
        )

    async def ThawGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("ThawGroup", context)
        self.thaws.append(request.domain)
        await asyncio.sleep(self.thaw_delay)
        if self.holds.get(request.domain) == request.group_id:
            del self.holds[request.domain]
            self.frozen.discard(request.domain)
        return pb.FreezeStatus(domain=request.domain, frozen=request.domain in self.frozen)

    async def GetFreezeStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("GetFreezeStatus", context)
        return pb.FreezeStatus(domain=request.domain, frozen=request.domain in self.frozen)

    async def DeleteSnapshot(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("DeleteSnapshot", context)
        if request.domain in self.holds:
            await context.abort(grpc.StatusCode.ABORTED, f"{request.domain} is held")
        if request.idempotency_key not in self.by_key:
            self.deleted.append(request.snapshot_id)
            job_id = uuid.uuid4().hex
            self.by_key[request.idempotency_key] = job_id
            self.jobs[job_id] = pb.Job(
                id=job_id,
                operation="delete",
                state=pb.JOB_STATE_SUCCEEDED,
                domain=request.domain,
                idempotency_key=request.idempotency_key,
                delete=pb.DeleteResult(snapshot_id=request.snapshot_id),
            )
        return self.jobs[self.by_key[request.idempotency_key]]

    async def BackupSnapshot(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("BackupSnapshot", context)
        if request.idempotency_key not in self.by_key:
            self.backed_up.append((request.snapshot_id, request.target))
            job_id = uuid.uuid4().hex
            self.by_key[request.idempotency_key] = job_id
            succeeded = self.outcome == "succeeded"
            made = None
            if succeeded:
                volume = f"{request.domain}/vda"
                on_target = self.backups.setdefault(request.target, [])
                earlier = [b.id for b in on_target if b.volume == volume]
                made = pb.Backup(
                    id=f"b-{job_id[:8]}",
                    volume=volume,
                    snapshot_id=request.snapshot_id,
                    snapshot_name=self.snapshot_names.get(request.snapshot_id, ""),
                    parent_id="" if request.full or not earlier else earlier[-1],
                    target=request.target,
                )
                on_target.append(made)
            self.jobs[job_id] = pb.Job(
                id=job_id,
                operation="backup",
                state=pb.JOB_STATE_SUCCEEDED if succeeded else pb.JOB_STATE_FAILED,
                domain=request.domain,
                idempotency_key=request.idempotency_key,
                **(
                    {"backup": made}
                    if made is not None
                    else {"error": pb.JobError(code="RESOURCE_EXHAUSTED", message="target full")}
                ),
            )
        return self.jobs[self.by_key[request.idempotency_key]]

    async def ListBackups(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("ListBackups", context)
        found = self.backups.get(request.target, [])
        chosen = [
            b for b in found if not request.domain or b.volume.startswith(request.domain + "/")
        ]
        return pb.ListBackupsResponse(backups=chosen)

    async def RestoreBackup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("RestoreBackup", context)
        if request.idempotency_key not in self.by_key:
            self.restored.append((request.backup_id, request.to or "in place"))
            job_id = uuid.uuid4().hex
            self.by_key[request.idempotency_key] = job_id
            self.jobs[job_id] = pb.Job(
                id=job_id,
                operation="restore-in-place" if request.in_place else "restore",
                state=pb.JOB_STATE_SUCCEEDED,
                idempotency_key=request.idempotency_key,
                restore=pb.RestoreResult(backup_id=request.backup_id, to=request.to or "rbd/x"),
            )
        return self.jobs[self.by_key[request.idempotency_key]]

    async def DeleteBackup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._gate("DeleteBackup", context)
        if request.idempotency_key not in self.by_key:
            on_target = self.backups.get(request.target, [])
            going = {request.backup_id}
            for backup in on_target:  # oldest first: a parent comes before its children
                if request.with_descendants and backup.parent_id in going:
                    going.add(backup.id)
            self.backups[request.target] = [b for b in on_target if b.id not in going]
            job_id = uuid.uuid4().hex
            self.by_key[request.idempotency_key] = job_id
            self.jobs[job_id] = pb.Job(
                id=job_id,
                operation="backup-delete",
                state=pb.JOB_STATE_SUCCEEDED,
                idempotency_key=request.idempotency_key,
                backup_delete=pb.BackupDeleteResult(removed_ids=sorted(going)),
            )
        return self.jobs[self.by_key[request.idempotency_key]]


class FakeAgentServer:
    """`FakeAgent`s each on its own port of 127.0.0.1."""

    def __init__(self) -> None:
        self.servers: list[grpc.aio.Server] = []
        self.endpoints: dict[str, str] = {}  # agent name: host:port

    async def start(
        self, agent: FakeAgent, credentials: grpc.ServerCredentials | None = None
    ) -> str:
        """Serves `agent`, over TLS with `credentials` when given."""
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        self.servers.append(server)
        self.endpoints[agent.name] = f"127.0.0.1:{port}"
        return self.endpoints[agent.name]

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop(grace=None) for s in self.servers))
