"""The AgentService servicer: each RPC checks the caller's role, calls an operation off the
event loop, and maps the agent's errors to status codes; mutating calls are audited."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc

from agent import __version__, validate
from agent.errors import (
    HostsnapError,
    InvalidArgument,
    NotFound,
    Precondition,
    TimedOut,
    Unavailable,
)
from agent.jobs import JobState
from agent.model import ImageSnapshotRequest, SnapshotRequest
from agent.operations import (
    backup,
    backup_delete,
    chains,
    consolidate,
    delete,
    group,
    host_info,
    image_snapshot,
    jobrun,
    listing,
    rescue,
    restore,
    restore_in_place,
    revert,
    snapshot,
    stats,
    volumes,
)
from agent.operations.services import Services
from agent.service import convert, status
from agent.service.executor import JobExecutor
from agent.service.security import AuditLog, Authorizer, Role, has_certificate
from agent.settings import Settings
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
WATCH_POLL_SECONDS = 1.0
QUERY_THREADS = 16
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _target(request: Any) -> str:
    for field in ("domain", "snapshot_id", "job_id"):
        value = getattr(request, field, "")
        if value:
            return str(value)
    return ",".join(getattr(request, "rbd_images", ()))


INTERNAL_MESSAGE = "internal error in the agent; its log has the details"


@contextlib.asynccontextmanager
async def _stream_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """A streaming RPC's errors as status codes, as `rpc` does for unary ones."""
    try:
        yield
    except HostsnapError as e:
        context.set_trailing_metadata(status.trailers(e))
        await context.abort(status.code_of(e), str(e))
    except Exception:
        log.exception("a stream failed unexpectedly")
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def rpc(role: Role, *, audited: bool = False) -> Callable[[Handler], Handler]:
    """Authorises the caller, maps errors to status codes, and audits mutating calls."""

    def wrap(method: Handler) -> Handler:
        @functools.wraps(method)
        async def handler(
            self: AgentServicer, request: Any, context: grpc.aio.ServicerContext
        ) -> Any:
            name = method.__name__
            identity = await self.authorize(context, role, name, request, audited)
            if audited:
                try:
                    self.audit.ensure_writable()
                except OSError as e:
                    log.error("audit log %s cannot be written: %s", self.audit.path, e)
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        "the agent's audit log cannot be written; no change is made without it",
                    )
            outcome = "INTERNAL"
            try:
                response = await method(self, request, context)
                outcome = "OK"
                return response
            except HostsnapError as e:
                code = status.code_of(e)
                outcome = code.name
                context.set_trailing_metadata(status.trailers(e))
                await context.abort(code, str(e))
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except Exception:
                log.exception("%s failed unexpectedly", name)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
            finally:
                if audited:
                    self.audit.write(identity, name, _target(request), outcome)

        return handler

    return wrap


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(self, svc: Services, settings: Settings, executor: JobExecutor) -> None:
        self.svc = svc
        self.settings = settings
        self.executor = executor
        self.authorizer = Authorizer(settings.roles, settings.listen.insecure_tcp)
        self.audit = AuditLog(Path(settings.audit_log))
        self.started_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._queries = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="hostsnap-query")
        self._busy_threads = 0
        self._watchers: dict[str, set[asyncio.Event]] = {}
        svc.journal.listeners.append(self._job_changed)

    def _job_changed(self, job_id: str) -> None:
        """From a job's thread: wakes the watchers of that job on the event loop."""

        def wake() -> None:
            for event in self._watchers.get(job_id, ()):
                event.set()

        self._loop.call_soon_threadsafe(wake)

    async def authorize(
        self,
        context: grpc.aio.ServicerContext,
        role: Role,
        rpc_name: str,
        request: Any,
        audited: bool,
    ) -> str:
        identity, granted = self.authorizer.identify(context)
        if identity is None:
            if audited:
                self.audit.write(None, rpc_name, _target(request), "UNAUTHENTICATED")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the client certificate has no CN or subject alternative name to hold a role"
                if has_certificate(context)
                else "no verified client certificate: present one signed by the agent's client CA",
            )
        if granted is None or granted < role:
            if audited:
                self.audit.write(identity, rpc_name, _target(request), "PERMISSION_DENIED")
            have = granted.name.lower() if granted else "no role"
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} has {have}; {rpc_name} needs the {role.name.lower()} role "
                "(set in [roles] of the agent's configuration)",
            )
        assert identity is not None
        return identity

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        """Runs a libvirt, librbd, qemu-img or journal call off the event loop, in a bounded
        pool of its own, bounded in time. A call that hangs keeps its thread; when every
        thread hangs, new calls are refused at once instead of queueing behind them."""
        if self._busy_threads >= QUERY_THREADS:
            raise Unavailable(
                f"{QUERY_THREADS} calls are waiting on libvirt, a guest agent or Ceph; retry later",
                reason="AGENT_BUSY",
            )
        self._busy_threads += 1
        future = self._loop.run_in_executor(self._queries, call, *args)
        future.add_done_callback(self._thread_free)
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), self.settings.limits.query_timeout
            )
        except TimeoutError as e:
            raise TimedOut(
                f"the call did not answer within {self.settings.limits.query_timeout:.0f} s"
            ) from e

    def _thread_free(self, _: Any) -> None:
        self._busy_threads -= 1

    # queries

    @rpc(Role.VIEWER)
    async def GetHostInfo(self, request: pb.GetHostInfoRequest, context: Any) -> pb.HostInfo:
        found = await self._blocking(host_info.host_info, self.svc)
        return pb.HostInfo(
            hostname=found.hostname,
            agent_version=__version__,
            libvirt_version=found.libvirt_version,
            qemu_version=found.qemu_version,
            ceph_client_version=found.ceph_client_version,
            started_at=convert.timestamp(self.started_at),
        )

    @rpc(Role.VIEWER)
    async def ListDomains(
        self, request: pb.ListDomainsRequest, context: Any
    ) -> pb.ListDomainsResponse:
        found = await self._blocking(host_info.list_domains, self.svc, request.include_inactive)
        return pb.ListDomainsResponse(
            domains=[
                pb.Domain(name=d.name, uuid=d.uuid, state=convert.DOMAIN_STATE[d.state])
                for d in found
            ]
        )

    @rpc(Role.VIEWER)
    async def ListVolumes(
        self, request: pb.ListVolumesRequest, context: Any
    ) -> pb.ListVolumesResponse:
        found = await self._blocking(volumes.domain_volumes, self.svc, request.domain)
        return pb.ListVolumesResponse(
            volumes=[
                pb.Volume(
                    domain=v.domain,
                    target=v.target,
                    kind=convert.KIND[v.kind],
                    format=v.format,
                    location=v.location,
                )
                for v in found
            ]
        )

    @rpc(Role.VIEWER)
    async def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: Any
    ) -> pb.ListSnapshotsResponse:
        if request.rbd_images:
            if request.domain or request.disks:
                raise InvalidArgument("name a domain (and disks) or rbd_images, not both")
            found = await self._blocking(listing.list_images, self.svc, tuple(request.rbd_images))
        else:
            found = await self._blocking(
                listing.list_snapshots, self.svc, request.domain, tuple(request.disks)
            )
        return pb.ListSnapshotsResponse(volumes=[convert.volume_snapshots(v) for v in found])

    # jobs

    async def _started(self, operation: Callable[[Callable[[str], None]], Any]) -> pb.Job:
        job_id = await self.executor.start(operation)
        return await self._blocking(self._job, job_id)

    @rpc(Role.OPERATOR, audited=True)
    async def CreateSnapshot(self, request: pb.CreateSnapshotRequest, context: Any) -> pb.Job:
        if request.rbd_images:
            if request.domain or request.disks or request.group_id:
                raise InvalidArgument(
                    "name a domain (with disks, group_id) or rbd_images, not both",
                    reason="DOMAIN_AND_IMAGES",
                )
            images = ImageSnapshotRequest(
                images=tuple(request.rbd_images),
                quiesce=convert.quiesce(request.quiesce),
                name=request.name,
                idempotency_key=convert.idempotency_key(request.idempotency_key),
            )
            return await self._started(
                lambda started: image_snapshot.create(self.svc, images, started)
            )
        wanted = SnapshotRequest(
            domain=request.domain,
            disks=tuple(request.disks),
            quiesce=convert.quiesce(request.quiesce),
            name=request.name,
            idempotency_key=convert.idempotency_key(request.idempotency_key),
            group_id=request.group_id,
        )
        return await self._started(lambda started: snapshot.create(self.svc, wanted, started))

    @rpc(Role.OPERATOR, audited=True)
    async def RevertSnapshot(self, request: pb.RevertSnapshotRequest, context: Any) -> pb.Job:
        wanted = revert.RevertRequest(
            request.snapshot_id,
            request.domain,
            convert.idempotency_key(request.idempotency_key),
            request.stop_domain,
        )
        return await self._started(lambda started: revert.revert(self.svc, wanted, started))

    @rpc(Role.OPERATOR, audited=True)
    async def DeleteSnapshot(self, request: pb.DeleteSnapshotRequest, context: Any) -> pb.Job:
        wanted = delete.DeleteRequest(
            request.snapshot_id,
            request.domain,
            convert.idempotency_key(request.idempotency_key),
            request.defer_merge,
        )
        return await self._started(lambda started: delete.delete(self.svc, wanted, started))

    @rpc(Role.OPERATOR, audited=True)
    async def BackupSnapshot(self, request: pb.BackupSnapshotRequest, context: Any) -> pb.Job:
        wanted = backup.BackupRequest(
            request.snapshot_id,
            request.target,
            request.domain,
            request.full,
            convert.idempotency_key(request.idempotency_key),
        )
        return await self._started(lambda started: backup.backup(self.svc, wanted, started))

    @rpc(Role.VIEWER)
    async def ListBackups(
        self, request: pb.ListBackupsRequest, context: Any
    ) -> pb.ListBackupsResponse:
        found = await self._blocking(backup.listed, self.svc, request.target, request.domain)
        return pb.ListBackupsResponse(
            backups=[convert.backup(jobrun.to_json(b), request.target) for b in found]
        )

    @rpc(Role.OPERATOR, audited=True)
    async def RestoreBackup(self, request: pb.RestoreBackupRequest, context: Any) -> pb.Job:
        wanted = restore.RestoreRequest(
            request.backup_id,
            request.target,
            request.to,
            convert.idempotency_key(request.idempotency_key),
            request.in_place,
        )
        run = restore_in_place.restore_in_place if wanted.in_place else restore.restore
        return await self._started(lambda started: run(self.svc, wanted, started))

    @rpc(Role.OPERATOR, audited=True)
    async def VerifyBackup(self, request: pb.VerifyBackupRequest, context: Any) -> pb.Job:
        return await self._started(
            lambda started: restore.verify(
                self.svc, request.target, request.backup_id, on_started=started
            )
        )

    @rpc(Role.OPERATOR, audited=True)
    async def DeleteBackup(self, request: pb.DeleteBackupRequest, context: Any) -> pb.Job:
        wanted = backup_delete.DeleteBackupRequest(
            request.backup_id,
            request.target,
            request.with_descendants,
            convert.idempotency_key(request.idempotency_key),
        )
        return await self._started(
            lambda started: backup_delete.delete_backup(self.svc, wanted, started)
        )

    @rpc(Role.VIEWER)
    async def GetChains(self, request: pb.GetChainsRequest, context: Any) -> pb.GetChainsResponse:
        found = await self._blocking(
            chains.domain_health, self.svc, request.domain, tuple(request.disks)
        )
        return pb.GetChainsResponse(chains=[convert.chain(c) for c in found])

    @rpc(Role.OPERATOR, audited=True)
    async def Consolidate(self, request: pb.ChainRequest, context: Any) -> pb.Job:
        wanted = convert.chain_request(request)
        return await self._started(
            lambda started: consolidate.consolidate(self.svc, wanted, started)
        )

    @rpc(Role.OPERATOR, audited=True)
    async def Flatten(self, request: pb.ChainRequest, context: Any) -> pb.Job:
        wanted = convert.chain_request(request)
        return await self._started(lambda started: consolidate.flatten(self.svc, wanted, started))

    def _job(self, job_id: str) -> pb.Job:
        validate.job_id(job_id)
        try:
            return convert.job(self.svc.journal.get(job_id))
        except KeyError as e:
            raise NotFound(f"no job {job_id} on this host", reason="JOB_NOT_FOUND") from e

    @rpc(Role.VIEWER)
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        return await self._blocking(self._job, request.job_id)

    @rpc(Role.VIEWER)
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        state = convert.job_state(request.state)
        if request.domain:
            validate.domain_name(request.domain)
        if request.limit < 0:
            raise InvalidArgument("limit must not be negative")
        everything = await self._blocking(self.svc.journal.jobs, state)
        jobs = [j for j in reversed(everything) if not request.domain or j.domain == request.domain]
        return pb.ListJobsResponse(jobs=[convert.job(j) for j in jobs[: request.limit or 100]])

    @rpc(Role.OPERATOR, audited=True)
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        current = await self._blocking(self._job, request.job_id)
        if current.state != pb.JOB_STATE_RUNNING:
            state = pb.JobState.Name(current.state).removeprefix("JOB_STATE_").lower()
            raise Precondition(
                f"job {request.job_id} has already ended ({state})", reason="JOB_ENDED"
            )
        self.svc.cancellations.request(request.job_id)
        return await self._blocking(self._job, request.job_id)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Job]:
        await self.authorize(context, Role.VIEWER, "WatchJob", request, audited=False)
        changed = asyncio.Event()
        self._watchers.setdefault(request.job_id, set()).add(changed)
        try:
            async with _stream_errors(context):
                last = None
                while True:
                    changed.clear()
                    current = await self._blocking(self._job, request.job_id)
                    if current != last:
                        yield current
                        last = current
                    if current.state != pb.JOB_STATE_RUNNING:
                        return
                    # Woken by the job's next journal write; the timeout also catches jobs of
                    # another process (a previous agent's, finished by recovery).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), WATCH_POLL_SECONDS)
        finally:
            watchers = self._watchers.get(request.job_id, set())
            watchers.discard(changed)
            if not watchers:
                self._watchers.pop(request.job_id, None)

    # statistics

    @rpc(Role.VIEWER)
    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.Stats:
        seconds = stats.interval(request.interval_seconds)
        first = await self._blocking(stats.sample, self.svc)
        await asyncio.sleep(seconds)
        second = await self._blocking(stats.sample, self.svc)
        found = await self._blocking(stats.measure, self.svc, first, second)
        return convert.host_stats(found)

    async def WatchStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Stats]:
        await self.authorize(context, Role.VIEWER, "WatchStats", request, audited=False)
        async with _stream_errors(context):
            seconds = stats.interval(request.interval_seconds)
            previous = await self._blocking(stats.sample, self.svc)
            while True:
                await asyncio.sleep(seconds)
                current = await self._blocking(stats.sample, self.svc)
                yield convert.host_stats(
                    await self._blocking(stats.measure, self.svc, previous, current)
                )
                previous = current

    # rescue

    @rpc(Role.VIEWER)
    async def GetFreezeStatus(
        self, request: pb.GetFreezeStatusRequest, context: Any
    ) -> pb.FreezeStatus:
        frozen = await self._blocking(rescue.is_frozen, self.svc, request.domain)
        return pb.FreezeStatus(domain=request.domain, frozen=frozen)

    @rpc(Role.OPERATOR, audited=True)
    async def Thaw(self, request: pb.ThawRequest, context: Any) -> pb.FreezeStatus:
        frozen = await self._blocking(group.rescue_thaw, self.svc, request.domain)
        return pb.FreezeStatus(domain=request.domain, frozen=frozen)

    # consistency groups

    @rpc(Role.OPERATOR, audited=True)
    async def FreezeForGroup(self, request: pb.GroupFreezeRequest, context: Any) -> pb.GroupFreeze:
        self.executor.refuse_if_draining()  # a hold is a job, though not one of the executor
        held = await self._blocking(
            group.freeze, self.svc, request.domain, request.group_id, request.hold_seconds
        )
        return convert.group_freeze(held)

    @rpc(Role.OPERATOR, audited=True)
    async def ThawGroup(self, request: pb.GroupThawRequest, context: Any) -> pb.FreezeStatus:
        frozen = await self._blocking(group.thaw, self.svc, request.domain, request.group_id)
        return pb.FreezeStatus(domain=request.domain, frozen=frozen)

    # restarts

    @rpc(Role.ADMIN, audited=True)
    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.DrainResponse:
        self.executor.drain()
        # The journal's running jobs include the group holds, which the executor does not run.
        held = await self._blocking(self.svc.journal.jobs, JobState.RUNNING)
        running = self.executor.running | {job.id for job in held}
        return pb.DrainResponse(running_job_ids=sorted(running), starting=self.executor.starting)
