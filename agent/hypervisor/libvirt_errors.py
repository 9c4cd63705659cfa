"""libvirt's errors as the agent's: a state or input problem is said as one, so a caller sees
FAILED_PRECONDITION or NOT_FOUND rather than INTERNAL."""

from __future__ import annotations

import libvirt

from agent.errors import (
    Conflict,
    HostsnapError,
    NotFound,
    OperationFailed,
    Precondition,
    TimedOut,
    Unavailable,
)

_UNREACHABLE = (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC)
_GUEST_AGENT_SILENT = (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED)
# "Requested operation is not valid: domain is not running", and other states a call needs.
_WRONG_STATE = (
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
)


def translated(what: str, error: libvirt.libvirtError) -> HostsnapError:
    """The agent's error for a libvirt error raised while doing `what`."""
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(f"{what}: no such domain")
    if code in _UNREACHABLE:
        return Unavailable(f"{what}: libvirt cannot be reached: {message}")
    if code in _GUEST_AGENT_SILENT:
        return Unavailable(f"{what}: {message}")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return TimedOut(f"{what}: {message}")
    if code == libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
        return Conflict(f"{what}: {message}")
    if code in _WRONG_STATE:
        return Precondition(f"{what}: {message}", reason="DOMAIN_STATE")
    return OperationFailed(f"{what}: {message}")
