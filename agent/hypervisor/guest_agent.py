"""The qemu-guest-agent of a running domain, reached through libvirt; every call is bounded."""

from __future__ import annotations

import json
import logging
from typing import Any

import libvirt
import libvirt_qemu

from agent.hypervisor.libvirt_errors import translated

log = logging.getLogger(__name__)


class GuestAgent:
    def __init__(self, dom: libvirt.virDomain, timeout: int) -> None:
        self._dom = dom
        self._timeout = timeout
        self._name = dom.name()

    def _command(self, execute: str) -> Any:
        try:
            reply = libvirt_qemu.qemuAgentCommand(
                self._dom, json.dumps({"execute": execute}), self._timeout, 0
            )
        except libvirt.libvirtError as e:
            raise translated(f"guest agent of {self._name} did not answer {execute}", e) from e
        return json.loads(reply)["return"]

    def ping(self) -> None:
        self._command("guest-ping")

    def freeze_status(self) -> str:
        """`frozen` or `thawed`, as the guest agent reports it."""
        return str(self._command("guest-fsfreeze-status"))

    def freeze(self) -> int:
        """Freezes the guest's filesystems through libvirt (which then knows the guest is
        frozen); returns how many were frozen."""
        log.info("domain %s: freezing filesystems", self._name)
        try:
            self._dom.agentSetResponseTimeout(self._timeout, 0)
            return int(self._dom.fsFreeze())
        except libvirt.libvirtError as e:
            raise translated(f"freezing the filesystems of {self._name}", e) from e

    def thaw(self) -> int:
        log.info("domain %s: thawing filesystems", self._name)
        try:
            self._dom.agentSetResponseTimeout(self._timeout, 0)
            return int(self._dom.fsThaw())
        except libvirt.libvirtError as e:
            raise translated(f"thawing the filesystems of {self._name}", e) from e
