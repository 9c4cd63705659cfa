"""An async client of one hostsnap-agent (grpc.aio, one channel per agent). Each call has a
deadline: the client's `call_timeout`, or less when the caller has less time left. gRPC
failures come out as `AgentError`s (`errors`), results as plain data (`jobs`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from controller.agents.credentials import TlsFiles
from controller.agents.errors import from_rpc_error
from controller.agents.group_freeze import AgentGroupFreeze
from controller.agents.jobs import CONSISTENCIES, VOLUME_KINDS, AgentJob, AgentJobState
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

QUIESCE = {
    "required": pb.QUIESCE_REQUIRED,
    "preferred": pb.QUIESCE_PREFERRED,
    "none": pb.QUIESCE_NONE,
}

# AgentJobState as agent.proto's JobState numbers.
_STATE_NUMBERS = {
    AgentJobState.RUNNING: pb.JOB_STATE_RUNNING,
    AgentJobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    AgentJobState.FAILED: pb.JOB_STATE_FAILED,
    AgentJobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


def _when(timestamp: Any) -> datetime:
    """A google.protobuf.Timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp.seconds + timestamp.nanos / 1e9, UTC)


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    agent_version: str


@dataclass(frozen=True)
class AgentVolume:
    domain: str
    target: str  # the disk's target device, e.g. "vda"
    location: str  # the active image file, or "pool/image" for RBD


@dataclass(frozen=True)
class AgentSnapshot:
    """One snapshot of a disk as its agent lists it."""

    id: str
    name: str
    created_at: datetime | None
    consistency: str  # "application", "crash", "unknown" ("" when the agent did not say)
    content: str  # the layer's file, or "pool/image@snapshot"


@dataclass(frozen=True)
class AgentBackup:
    """A backup on a target as an agent lists it (read from the target)."""

    id: str
    volume: str  # "domain/disk"
    snapshot_id: str
    snapshot_name: str
    parent_id: str  # "" for a full backup
    taken_at: datetime | None = None  # when its snapshot was taken
    kind: str = ""  # "file" or "rbd"


@dataclass(frozen=True)
class AgentDiskSnapshots:
    """A disk of a domain with its active image and snapshots (newest first)."""

    target: str
    kind: str  # "file" or "rbd"
    location: str  # the active image
    snapshots: tuple[AgentSnapshot, ...]


class AgentClient:
    def __init__(
        self,
        endpoint: str,
        tls: TlsFiles | None,
        *,
        call_timeout: float = 30.0,
    ) -> None:
        """`tls` None talks plain TCP (tests and development only; agents refuse it unless
        configured with insecure_tcp)."""
        self.endpoint = endpoint
        self._tls = tls
        self.call_timeout = call_timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def _connected(self) -> Any:
        # Made on first use, inside the event loop (grpc.aio binds a channel to its loop).
        if self._stub is None:
            if self._tls is None:
                self._channel = grpc.aio.insecure_channel(self.endpoint)
            else:
                options = []
                if self._tls.server_name:
                    options.append(("grpc.ssl_target_name_override", self._tls.server_name))
                self._channel = grpc.aio.secure_channel(
                    self.endpoint, self._tls.channel_credentials(), options=options
                )
            self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        return self._stub

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.call_timeout
        return max(0.001, min(timeout, self.call_timeout))

    async def _unary(self, rpc: str, request: Any, timeout: float | None) -> Any:
        method = getattr(self._connected(), rpc)
        try:
            return await method(request, timeout=self._timeout(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e, endpoint=self.endpoint, rpc=rpc) from e

    async def host_info(self, *, timeout: float | None = None) -> HostInfo:
        info = await self._unary("GetHostInfo", pb.GetHostInfoRequest(), timeout)
        return HostInfo(hostname=str(info.hostname), agent_version=str(info.agent_version))

    async def list_volumes(self, domain: str, *, timeout: float | None = None) -> list[AgentVolume]:
        found = await self._unary("ListVolumes", pb.ListVolumesRequest(domain=domain), timeout)
        return [AgentVolume(str(v.domain), str(v.target), str(v.location)) for v in found.volumes]

    async def list_snapshots(
        self, domain: str, *, disks: Sequence[str] = (), timeout: float | None = None
    ) -> list[AgentDiskSnapshots]:
        """The domain's disks (the `disks` targets, or all) with their snapshots."""
        request = pb.ListSnapshotsRequest(domain=domain, disks=list(disks))
        found = await self._unary("ListSnapshots", request, timeout)
        return [
            AgentDiskSnapshots(
                target=str(v.volume.target),
                kind=VOLUME_KINDS.get(int(v.volume.kind), ""),
                location=str(v.volume.location),
                snapshots=tuple(
                    AgentSnapshot(
                        id=str(s.id),
                        name=str(s.name),
                        created_at=_when(s.created_at) if s.HasField("created_at") else None,
                        consistency=CONSISTENCIES.get(int(s.consistency), ""),
                        content=str(s.content),
                    )
                    for s in v.snapshots
                ),
            )
            for v in found.volumes
        ]

    async def create_snapshot(
        self,
        domain: str,
        *,
        idempotency_key: str,
        disks: Sequence[str] = (),
        quiesce: str = "preferred",
        name: str = "",
        group_id: str = "",
        rbd_images: Sequence[str] = (),
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts a snapshot job; the same key again returns the job the agent made first.
        With `group_id`, a consistency group member's, taken under the group's hold. With
        `rbd_images` ("pool/image") and no domain, a stopped VM's volumes (the agent refuses
        an image in use: FAILED_PRECONDITION, IMAGE_IN_USE)."""
        request = pb.CreateSnapshotRequest(
            domain=domain,
            disks=list(disks),
            quiesce=QUIESCE[quiesce],
            name=name,
            idempotency_key=idempotency_key,
            group_id=group_id,
            rbd_images=list(rbd_images),
        )
        log.info(
            "CreateSnapshot of %s%s (key %s) on agent %s",
            domain or "RBD images " + ",".join(rbd_images),
            f" disks {','.join(disks)}" if disks else "",
            idempotency_key,
            self.endpoint,
        )
        return AgentJob.from_proto(await self._unary("CreateSnapshot", request, timeout))

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> AgentJob:
        job = await self._unary("GetJob", pb.GetJobRequest(job_id=job_id), timeout)
        return AgentJob.from_proto(job)

    async def list_jobs(
        self,
        domain: str,
        *,
        state: AgentJobState | None = None,
        limit: int = 0,
        timeout: float | None = None,
    ) -> list[AgentJob]:
        """The domain's jobs (only those in `state` when given), newest first; at most
        `limit` (0: the agent's default, 100)."""
        request = pb.ListJobsRequest(
            domain=domain, state=0 if state is None else _STATE_NUMBERS[state], limit=limit
        )
        found = await self._unary("ListJobs", request, timeout)
        return [AgentJob.from_proto(job) for job in found.jobs]

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> AgentJob:
        job = await self._unary("CancelJob", pb.CancelJobRequest(job_id=job_id), timeout)
        return AgentJob.from_proto(job)

    async def freeze_for_group(
        self, domain: str, group_id: str, hold_seconds: float, *, timeout: float | None = None
    ) -> AgentGroupFreeze:
        """Holds the domain's guest frozen for the group (the agent thaws it after
        `hold_seconds` at the latest); the same domain and group again returns that hold."""
        request = pb.GroupFreezeRequest(domain=domain, group_id=group_id, hold_seconds=hold_seconds)
        log.info(
            "FreezeForGroup of %s (group %s, %.1fs) on agent %s",
            domain,
            group_id,
            hold_seconds,
            self.endpoint,
        )
        return AgentGroupFreeze.from_proto(await self._unary("FreezeForGroup", request, timeout))

    async def thaw_group(self, domain: str, group_id: str, *, timeout: float | None = None) -> bool:
        """Ends the group's hold of the domain; whether the guest still reports frozen."""
        request = pb.GroupThawRequest(domain=domain, group_id=group_id)
        log.info("ThawGroup of %s (group %s) on agent %s", domain, group_id, self.endpoint)
        return bool((await self._unary("ThawGroup", request, timeout)).frozen)

    async def delete_snapshot(
        self,
        snapshot_id: str,
        *,
        idempotency_key: str,
        domain: str = "",
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts deleting a snapshot (when `domain` is given, it must be that domain's)."""
        request = pb.DeleteSnapshotRequest(
            snapshot_id=snapshot_id, domain=domain, idempotency_key=idempotency_key
        )
        log.info("DeleteSnapshot %s of %s on agent %s", snapshot_id, domain, self.endpoint)
        return AgentJob.from_proto(await self._unary("DeleteSnapshot", request, timeout))

    async def backup_snapshot(
        self,
        snapshot_id: str,
        target: str,
        *,
        idempotency_key: str,
        domain: str = "",
        full: bool = False,
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts backing a snapshot up to the agent's backup target `target` (incremental
        over the volume's last backup there unless `full`); BackedUp once the job succeeds:
        verified."""
        request = pb.BackupSnapshotRequest(
            snapshot_id=snapshot_id,
            target=target,
            domain=domain,
            full=full,
            idempotency_key=idempotency_key,
        )
        log.info(
            "BackupSnapshot %s of %s to %s on agent %s", snapshot_id, domain, target, self.endpoint
        )
        return AgentJob.from_proto(await self._unary("BackupSnapshot", request, timeout))

    async def list_backups(
        self, target: str, domain: str = "", *, timeout: float | None = None
    ) -> list[AgentBackup]:
        """The target's backups (of `domain`), oldest first."""
        found = await self._unary(
            "ListBackups", pb.ListBackupsRequest(target=target, domain=domain), timeout
        )
        return [
            AgentBackup(
                id=str(b.id),
                volume=str(b.volume),
                snapshot_id=str(b.snapshot_id),
                snapshot_name=str(b.snapshot_name),
                parent_id=str(b.parent_id),
                taken_at=_when(b.taken_at) if b.HasField("taken_at") else None,
                kind=VOLUME_KINDS.get(int(b.kind), ""),
            )
            for b in found.backups
        ]

    async def restore_backup(
        self,
        backup_id: str,
        target: str,
        *,
        idempotency_key: str,
        to: str = "",
        in_place: bool = False,
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts rebuilding a volume from a backup: into the new image `to` ("/path" or
        "pool/image"), or in place onto the backup's own stopped volume."""
        request = pb.RestoreBackupRequest(
            backup_id=backup_id,
            target=target,
            to=to,
            in_place=in_place,
            idempotency_key=idempotency_key,
        )
        log.info(
            "RestoreBackup %s from %s to %s via agent %s",
            backup_id, target, to or "its volume", self.endpoint,
        )  # fmt: skip
        return AgentJob.from_proto(await self._unary("RestoreBackup", request, timeout))

    async def delete_backup(
        self,
        backup_id: str,
        target: str,
        *,
        idempotency_key: str,
        with_descendants: bool = False,
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts removing a backup (and, asked, those that build on it) from its target."""
        request = pb.DeleteBackupRequest(
            backup_id=backup_id,
            target=target,
            with_descendants=with_descendants,
            idempotency_key=idempotency_key,
        )
        log.info("DeleteBackup %s on %s via agent %s", backup_id, target, self.endpoint)
        return AgentJob.from_proto(await self._unary("DeleteBackup", request, timeout))

    async def watch_job(self, job_id: str, *, timeout: float) -> AsyncGenerator[AgentJob, None]:
        """The job's updates until it ends, the stream breaks or `timeout` (the whole
        stream's deadline, not bounded by call_timeout) passes."""
        call = self._connected().WatchJob(
            pb.WatchJobRequest(job_id=job_id), timeout=max(0.001, timeout)
        )
        try:
            async for update in call:
                yield AgentJob.from_proto(update)
        except grpc.RpcError as e:
            raise from_rpc_error(e, endpoint=self.endpoint, rpc="WatchJob") from e
        finally:
            call.cancel()

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()
