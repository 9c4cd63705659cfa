"""`hostsnap --direct`: the rescue commands without the agent, for when it is down. The
same operations the agent runs, called in this process, with the agent's configuration."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from agent import validate
from agent.errors import HostsnapError, InvalidArgument
from agent.operations import chains, listing, rescue, revert
from agent.service import convert
from agent.service.security import AuditLog
from agent.service.status import code_of
from agent.settings import load
from agent.wiring import open_services
from hostsnap.agent.v1 import agent_pb2 as pb

T = TypeVar("T")
DIRECT_COMMANDS = ("thaw", "freeze-status", "chain", "snapshots", "revert")


class DirectStub:
    """Answers like the agent's stub, for the calls the rescue commands make; its changes
    go to the agent's audit log as the agent's own do."""

    def __init__(self, config: Path | None) -> None:
        settings = load(config)
        self._svc = open_services(settings.agent)
        self._audit = AuditLog(Path(settings.audit_log))
        self._identity = f"direct:{getpass.getuser()}"

    def _audited(self, rpc: str, target: str, action: Callable[[], T]) -> T:
        outcome = "INTERNAL"
        try:
            result = action()
            outcome = "OK"
            return result
        except HostsnapError as e:
            outcome = code_of(e).name
            raise
        finally:
            self._audit.write(self._identity, rpc, target, outcome)

    def GetFreezeStatus(
        self, request: pb.GetFreezeStatusRequest, timeout: float = 0
    ) -> pb.FreezeStatus:
        frozen = rescue.is_frozen(self._svc, request.domain)
        return pb.FreezeStatus(domain=request.domain, frozen=frozen)

    def Thaw(self, request: pb.ThawRequest, timeout: float = 0) -> pb.FreezeStatus:
        def thaw() -> pb.FreezeStatus:
            frozen = rescue.thaw(self._svc, request.domain)
            return pb.FreezeStatus(domain=request.domain, frozen=frozen)

        return self._audited("Thaw", request.domain, thaw)

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, timeout: float = 0
    ) -> pb.ListSnapshotsResponse:
        found = listing.list_snapshots(self._svc, request.domain, tuple(request.disks))
        return pb.ListSnapshotsResponse(volumes=[convert.volume_snapshots(v) for v in found])

    def GetChains(self, request: pb.GetChainsRequest, timeout: float = 0) -> pb.GetChainsResponse:
        found = chains.domain_health(self._svc, request.domain, tuple(request.disks))
        return pb.GetChainsResponse(chains=[convert.chain(c) for c in found])

    def RevertSnapshot(self, request: pb.RevertSnapshotRequest, timeout: float = 0) -> pb.Job:
        wanted = revert.RevertRequest(
            request.snapshot_id,
            request.domain,
            convert.idempotency_key(request.idempotency_key),
            request.stop_domain,
        )
        result = self._audited(
            "RevertSnapshot", request.snapshot_id, lambda: revert.revert(self._svc, wanted)
        )
        return convert.job(self._svc.journal.get(result.job_id))

    def WatchJob(self, request: pb.WatchJobRequest, timeout: float = 0) -> Iterator[pb.Job]:
        yield convert.job(self._svc.journal.get(validate.job_id(request.job_id)))

    def __getattr__(self, name: str) -> None:
        raise InvalidArgument(f"--direct works for {', '.join(DIRECT_COMMANDS)} only")
