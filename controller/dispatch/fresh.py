"""CloudStack's state for the checks before acting: read again unless a read made within
`fresh_within` seconds is at hand. Reads that overlap are shared (the Inventory does that)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from controller.inventory import InventorySnapshot


class InventorySource(Protocol):
    async def refresh(self) -> InventorySnapshot: ...


class FreshInventory:
    def __init__(
        self,
        source: InventorySource,
        fresh_within: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._fresh_within = fresh_within
        self._clock = clock
        self._last: tuple[float, InventorySnapshot] | None = None

    async def get(self) -> InventorySnapshot:
        """CloudStack's view now; raises CloudStackError when it cannot be read (the last
        good one is not used to act on)."""
        if self._last is not None and self._clock() - self._last[0] < self._fresh_within:
            return self._last[1]
        asked = self._clock()
        snapshot = await self._source.refresh()
        self._last = (asked, snapshot)
        return snapshot
