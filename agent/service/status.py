"""The one place where the agent's errors become gRPC status codes."""

from __future__ import annotations

import grpc

from agent.errors import (
    Cancelled,
    Capacity,
    Conflict,
    Damaged,
    HostsnapError,
    InvalidArgument,
    NotFound,
    OperationFailed,
    Precondition,
    TimedOut,
    Unavailable,
)

CODES: dict[type[HostsnapError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Conflict: grpc.StatusCode.ABORTED,
    Precondition: grpc.StatusCode.FAILED_PRECONDITION,
    Capacity: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    OperationFailed: grpc.StatusCode.INTERNAL,
    Cancelled: grpc.StatusCode.CANCELLED,
    Damaged: grpc.StatusCode.DATA_LOSS,
    TimedOut: grpc.StatusCode.DEADLINE_EXCEEDED,
}

REASON_KEY = "hostsnap-reason"
CLOUDSTACK_KEY = "cloudstack-error-code"


def code_of(error: HostsnapError) -> grpc.StatusCode:
    for cls, code in CODES.items():
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def trailers(error: HostsnapError) -> tuple[tuple[str, str], ...]:
    metadata = [(REASON_KEY, error.reason)]
    if isinstance(error, Capacity):
        metadata.append((CLOUDSTACK_KEY, str(error.cloudstack_code)))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        metadata.append(("retry-after", f"{retry_after:.0f}"))
    return tuple(metadata)
