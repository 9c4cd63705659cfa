"""Fault switch for recovery tests. HOSTSNAP_FAULT=<step> makes the agent process die
(SIGKILL, no cleanup) when it reaches that step; HOSTSNAP_FAULT=fail:<step> makes the step
fail with an error instead, to exercise the undo path. A suffix @<domain> limits either to
the steps of that domain (one agent serves several members of a consistency group)."""

from __future__ import annotations

import logging
import os
import signal

from agent.errors import OperationFailed

log = logging.getLogger(__name__)

FAULT_ENV = "HOSTSNAP_FAULT"

STEPS = (
    "after-overlay-created",
    "after-freeze",
    "during-rbd-snapshot",
    "after-libvirt-snapshot",
    "before-merge-back",
    "during-merge-back",
    "after-merge-back-pivot",
    "during-revert",
    "during-block-commit",
    "after-merge",
    "while-paused",
    "group-snapshot",
)


def point(step: str, domain: str | None = None) -> None:
    assert step in STEPS, f"unknown fault step {step!r}"
    wanted, _, only = (os.environ.get(FAULT_ENV) or "").partition("@")
    if only and only != domain:
        return
    if wanted == step:
        log.error("fault switch %s=%s: dying now", FAULT_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"fail:{step}":
        raise OperationFailed(f"injected failure at step {step} ({FAULT_ENV}={wanted})")
