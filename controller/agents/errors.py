"""What the agent client raises: one typed error per kind of gRPC failure, so the dispatcher
branches on `transient` and never on status codes.

Transient: the call may succeed if made again later with the same idempotency key
(UNAVAILABLE and DEADLINE_EXCEEDED: the agent may not have got it, or it answered too late;
ABORTED and RESOURCE_EXHAUSTED: the agent is busy with the volume or out of headroom now).
Everything else is permanent for that request: a bad request, a refusal, a failed operation.
"""

from __future__ import annotations

from typing import Any

import grpc

REASON_KEY = "hostsnap-reason"
RETRY_AFTER_KEY = "retry-after"


class AgentError(Exception):
    """A call to an agent failed. `code` is the gRPC status name, `reason` the agent's
    machine-readable `hostsnap-reason` trailer when it sent one."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


class AgentUnavailable(AgentError):
    """The agent could not be reached or did not answer in time."""

    transient = True


class AgentBusy(AgentError):
    """The agent refused for now: the volume is busy or the host lacks headroom."""

    transient = True


class AgentRefused(AgentError):
    """The agent refused the request or the operation failed; sending it again will not
    help."""


_TRANSIENT: dict[grpc.StatusCode, type[AgentError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentUnavailable,
    grpc.StatusCode.ABORTED: AgentBusy,
    grpc.StatusCode.RESOURCE_EXHAUSTED: AgentBusy,
}


def _trailer(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        name, value = item[0], item[1]
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def from_rpc_error(error: grpc.RpcError, *, endpoint: str, rpc: str) -> AgentError:
    """The typed error for a failed call (a grpc.aio.AioRpcError on grpcio 1.51 and later)."""
    code = error.code()
    details = error.details() or ""
    trailers = error.trailing_metadata()
    reason = _trailer(trailers, REASON_KEY)
    retry_after: float | None = None
    raw = _trailer(trailers, RETRY_AFTER_KEY)
    if raw is not None:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    cls = _TRANSIENT.get(code, AgentRefused)
    name = str(getattr(code, "name", code))
    return cls(
        f"{rpc} on agent {endpoint}: {name}: {details}",
        code=name,
        reason=reason,
        retry_after=retry_after,
    )
