"""One mutating job per volume at a time, within the agent process."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from agent.errors import Conflict


class VolumeLocks:
    def __init__(self) -> None:
        self._held: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, volumes: Iterable[str], job_id: str, operation: str) -> Iterator[None]:
        keys = sorted(set(volumes))
        with self._lock:
            for key in keys:
                if key in self._held:
                    holder, op = self._held[key]
                    raise Conflict(
                        f"volume {key} is busy: job {holder} ({op}) holds it; "
                        "wait for that job to end or cancel it"
                    )
            for key in keys:
                self._held[key] = (job_id, operation)
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._held.pop(key, None)
