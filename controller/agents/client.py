"""An async client of one hostsnap-agent (grpc.aio, one channel per agent). Each call has a
deadline: the client's `call_timeout`, or less when the caller has less time left. gRPC
failures come out as `AgentError`s (`errors`), results as plain data (`jobs`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from controller.agents.credentials import TlsFiles
from controller.agents.errors import from_rpc_error
from controller.agents.jobs import AgentJob
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

QUIESCE = {
    "required": pb.QUIESCE_REQUIRED,
    "preferred": pb.QUIESCE_PREFERRED,
    "none": pb.QUIESCE_NONE,
}


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    agent_version: str


@dataclass(frozen=True)
class AgentVolume:
    domain: str
    target: str  # the disk's target device, e.g. "vda"
    location: str  # the active image file, or "pool/image" for RBD


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

    async def create_snapshot(
        self,
        domain: str,
        *,
        idempotency_key: str,
        disks: Sequence[str] = (),
        quiesce: str = "preferred",
        name: str = "",
        timeout: float | None = None,
    ) -> AgentJob:
        """Starts a snapshot job; the same key again returns the job the agent made first."""
        request = pb.CreateSnapshotRequest(
            domain=domain,
            disks=list(disks),
            quiesce=QUIESCE[quiesce],
            name=name,
            idempotency_key=idempotency_key,
        )
        log.info(
            "CreateSnapshot of %s (disks %s, key %s) on agent %s",
            domain,
            ",".join(disks) or "all",
            idempotency_key,
            self.endpoint,
        )
        return AgentJob.from_proto(await self._unary("CreateSnapshot", request, timeout))

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> AgentJob:
        job = await self._unary("GetJob", pb.GetJobRequest(job_id=job_id), timeout)
        return AgentJob.from_proto(job)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> AgentJob:
        job = await self._unary("CancelJob", pb.CancelJobRequest(job_id=job_id), timeout)
        return AgentJob.from_proto(job)

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
