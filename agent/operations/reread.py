"""Queries read what other actors change at the same moment: a merge pivots, CloudStack or an
administrator removes a snapshot, rbd-mirror adds one. A read that fails or disagrees with
itself because of that is read again from the start; only a failure that persists is one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from agent.errors import NotFound, OperationFailed, Precondition

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 3
PAUSE_SECONDS = 0.05
# A layer merged away mid-read, or a chain that libvirt and the images report differently
# while a block job pivots.
CHANGED_UNDER_US = (OperationFailed, NotFound, Precondition)


def read_consistently(read: Callable[[], T], what: str) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return read()
        except CHANGED_UNDER_US as e:
            if attempt == ATTEMPTS:
                raise
            log.info("%s changed while it was read (%s); reading it again", what, e)
            time.sleep(PAUSE_SECONDS * attempt)
    raise AssertionError("unreachable")
