"""Installs hostsnap's libvirt `qemu` hook, pointed at the lab agent's layer map.

libvirtd reads the hooks directory when it starts, so it is restarted when the hook is new
(running domains keep running across a libvirtd restart)."""

from __future__ import annotations

import logging
from pathlib import Path

from . import libvirtd
from .paths import LabPaths

log = logging.getLogger(__name__)

HOOK = Path("/etc/libvirt/hooks/qemu")
SOURCE = Path(__file__).resolve().parents[2] / "agent" / "libvirt_hook.py"
MARK = "# installed by hostsnap-lab"


def script(paths: LabPaths) -> str:
    return (
        f"#!/bin/sh\n{MARK}\n"
        # A checkout that is gone must not stop every domain of the host from starting.
        f"[ -f {SOURCE} ] || exit 0\n"
        f'exec /usr/bin/python3 {SOURCE} --layers {paths.agent_state / "layers.json"} "$@"\n'
    )


def ensure_installed(paths: LabPaths) -> None:
    wanted = script(paths)
    if HOOK.exists() and HOOK.read_text() == wanted:
        return
    if HOOK.exists() and MARK not in HOOK.read_text():
        raise RuntimeError(f"{HOOK} exists and is not the lab's; move it away first")
    log.info("installing the libvirt qemu hook %s", HOOK)
    HOOK.parent.mkdir(parents=True, exist_ok=True)
    HOOK.write_text(wanted)
    HOOK.chmod(0o755)
    libvirtd.restart(paths)


def remove() -> None:
    if HOOK.exists() and MARK in HOOK.read_text():
        HOOK.unlink()
