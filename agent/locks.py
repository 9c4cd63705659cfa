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
    def hold(
        self, volumes: Iterable[str], job_id: str, operation: str, lent_by: str | None = None
    ) -> Iterator[None]:
        """`lent_by`: a holder (a group hold) whose keys the job works under; they are
        neither taken nor given back here."""
        with self._lock:
            keys = sorted(k for k in set(volumes) if lent_by is None or self._holder(k) != lent_by)
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

    def _holder(self, key: str) -> str | None:
        held = self._held.get(key)
        return held[0] if held else None
