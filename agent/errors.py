"""One exception hierarchy for the agent; the servicer maps each class to one gRPC code.

Every error carries a machine-readable `reason` (UPPER_SNAKE) and a message that says what to
do. Storage failures keep the underlying message: nothing is reported as done that did not
happen.
"""

from __future__ import annotations


class HostsnapError(Exception):
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NotFound(HostsnapError):
    reason = "NOT_FOUND"


class InvalidArgument(HostsnapError):
    reason = "INVALID_ARGUMENT"


class Conflict(HostsnapError):
    """The volume is held by another job or a libvirt block job (gRPC ABORTED)."""

    reason = "VOLUME_BUSY"


class Precondition(HostsnapError):
    """The system is not in a state that allows the operation (gRPC FAILED_PRECONDITION)."""

    reason = "FAILED_PRECONDITION"


class Capacity(HostsnapError):
    """Not enough space or headroom (gRPC RESOURCE_EXHAUSTED)."""

    reason = "INSUFFICIENT_SPACE"
    # CloudStack reports storage failures as 530, "Storage Provider Error".
    cloudstack_code = 530


class NotAdmitted(Capacity):
    """The host or a pool had no room for the job before its deadline (RESOURCE_EXHAUSTED,
    with the seconds after which a retry makes sense)."""

    reason = "ADMISSION_TIMEOUT"

    def __init__(
        self, message: str, retry_after: float = 0.0, *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Unavailable(HostsnapError):
    """libvirt, the guest agent or Ceph cannot be reached (gRPC UNAVAILABLE)."""

    reason = "UNAVAILABLE"


class OperationFailed(HostsnapError):
    """A storage or hypervisor call failed; the message carries the underlying error."""

    reason = "OPERATION_FAILED"


class Damaged(HostsnapError):
    """What was stored does not read back as it was written: a damaged backup (gRPC
    DATA_LOSS)."""

    reason = "BACKUP_DAMAGED"


class TimedOut(HostsnapError):
    """A call did not answer in its time (gRPC DEADLINE_EXCEEDED)."""

    reason = "DEADLINE_EXCEEDED"


class Cancelled(HostsnapError):
    """The job was cancelled at a safe point (gRPC CANCELLED)."""

    reason = "CANCELLED"


def by_name(name: str | None) -> type[HostsnapError]:
    """The error class of that name (for replaying a journalled failure)."""
    for cls in (
        NotFound,
        InvalidArgument,
        Conflict,
        Precondition,
        Capacity,
        NotAdmitted,
        Unavailable,
        Damaged,
        Cancelled,
    ):
        if cls.__name__ == name:
            return cls
    return OperationFailed
