"""Fault switch for recovery tests. HOSTSNAP_FAULT=<step> makes the agent process die
(SIGKILL, no cleanup) when it reaches that step; HOSTSNAP_FAULT=fail:<step> makes the step
fail with an error instead, to exercise the undo path. A suffix @<domain> limits either to
the steps of that domain (one agent serves several members of a consistency group)."""

from __future__ import annotations

import enum
import logging
import os
import signal

from agent.errors import OperationFailed

log = logging.getLogger(__name__)

FAULT_ENV = "HOSTSNAP_FAULT"


class Step(enum.StrEnum):
    """The moments a kill (or a failure) can be injected at; HOSTSNAP_FAULT names the value.
    A step renamed here is a mypy error at its `point`, not a lab failure."""

    AFTER_OVERLAY_CREATED = "after-overlay-created"
    AFTER_FREEZE = "after-freeze"
    DURING_RBD_SNAPSHOT = "during-rbd-snapshot"
    AFTER_LIBVIRT_SNAPSHOT = "after-libvirt-snapshot"
    BEFORE_MERGE_BACK = "before-merge-back"
    DURING_MERGE_BACK = "during-merge-back"
    AFTER_MERGE_BACK_PIVOT = "after-merge-back-pivot"
    DURING_REVERT = "during-revert"
    DURING_BLOCK_COMMIT = "during-block-commit"
    AFTER_MERGE = "after-merge"
    WHILE_PAUSED = "while-paused"
    GROUP_SNAPSHOT = "group-snapshot"
    DURING_BACKUP_UPLOAD = "during-backup-upload"
    AFTER_BACKUP_UPLOAD = "after-backup-upload"
    DURING_RESTORE = "during-restore"
    BEFORE_RESTORE_PUBLISH = "before-restore-publish"


# The HOSTSNAP_FAULT values (without fail: or @domain), as plain strings.
STEPS: tuple[str, ...] = tuple(s.value for s in Step)


def point(step: Step, domain: str | None = None) -> None:
    name = Step(step).value  # ValueError for a name that is not a fault step
    wanted, _, only = (os.environ.get(FAULT_ENV) or "").partition("@")
    if only and only != domain:
        return
    if wanted == name:
        log.error("fault switch %s=%s: dying now", FAULT_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"fail:{name}":
        raise OperationFailed(f"injected failure at step {name} ({FAULT_ENV}={wanted})")
