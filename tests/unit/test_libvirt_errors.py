"""libvirt's errors reach the caller as what they are: a domain that does not run is a
precondition, a silent guest agent unavailable, a busy disk a conflict; only the rest is a
failed operation."""

from __future__ import annotations

import libvirt
import pytest

from agent.errors import (
    Conflict,
    HostsnapError,
    NotFound,
    OperationFailed,
    Precondition,
    TimedOut,
    Unavailable,
)
from agent.hypervisor.libvirt_errors import translated


class FakeLibvirtError(libvirt.libvirtError):
    def __init__(self, code: int, message: str) -> None:
        Exception.__init__(self, message)
        self._code, self._message = code, message

    def get_error_code(self) -> int:
        return self._code

    def get_error_message(self) -> str:
        return self._message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, NotFound),
        (libvirt.VIR_ERR_OPERATION_INVALID, Precondition),
        (libvirt.VIR_ERR_OPERATION_UNSUPPORTED, Precondition),
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, Unavailable),
        (libvirt.VIR_ERR_AGENT_UNSYNCED, Unavailable),
        (libvirt.VIR_ERR_NO_CONNECT, Unavailable),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, TimedOut),
        (libvirt.VIR_ERR_BLOCK_COPY_ACTIVE, Conflict),
        (libvirt.VIR_ERR_INTERNAL_ERROR, OperationFailed),
    ],
)
def test_each_libvirt_error_becomes_the_agents_error_of_its_kind(
    code: int, expected: type[HostsnapError]
):
    error = translated("thawing lab-vm", FakeLibvirtError(code, "domain is not running"))

    assert type(error) is expected
    assert "thawing lab-vm" in str(error)
