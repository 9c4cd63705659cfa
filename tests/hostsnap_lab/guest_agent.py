"""Talks to the qemu-guest-agent inside a lab guest through libvirt."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import libvirt
import libvirt_qemu

from .run import LabError


def command(dom: libvirt.virDomain, execute: str, timeout: int = 10, **arguments: Any) -> Any:
    """Sends one guest-agent command and returns its `return` value."""
    request: dict[str, Any] = {"execute": execute}
    if arguments:
        request["arguments"] = arguments
    reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
    return json.loads(reply)["return"]


def answers_ping(dom: libvirt.virDomain, timeout: int = 5) -> bool:
    try:
        command(dom, "guest-ping", timeout=timeout)
    except libvirt.libvirtError:
        return False
    return True


def fsfreeze_status(dom: libvirt.virDomain) -> str:
    return str(command(dom, "guest-fsfreeze-status"))


def exec_in_guest(dom: libvirt.virDomain, argv: list[str], timeout: float = 30.0) -> str:
    """Runs a program in the guest and returns its standard output; non-zero exit raises."""
    started = command(dom, "guest-exec", path=argv[0], arg=argv[1:], **{"capture-output": True})
    deadline = time.monotonic() + timeout
    while True:
        status = command(dom, "guest-exec-status", pid=started["pid"])
        if status["exited"]:
            break
        if time.monotonic() > deadline:
            raise LabError(f"{argv} did not finish in the guest within {timeout:.0f} s")
        time.sleep(0.1)
    out = base64.b64decode(status.get("out-data", "")).decode()
    if status.get("exitcode") != 0:
        err = base64.b64decode(status.get("err-data", "")).decode()
        raise LabError(f"{argv} exited {status.get('exitcode')} in the guest: {err.strip()}")
    return out
