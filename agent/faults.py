"""Fault switch for crash-recovery tests: HOSTSNAP_FAULT=<step> makes the agent process die
(SIGKILL, no cleanup) when it reaches that step."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

FAULT_ENV = "HOSTSNAP_FAULT"

STEPS = (
    "after-overlay-created",
    "after-freeze",
    "during-rbd-snapshot",
    "after-libvirt-snapshot",
    "during-revert",
)


def point(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        log.error("fault switch %s=%s: dying now", FAULT_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)
