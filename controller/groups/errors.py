"""Why a consistency group was refused before anything was frozen, or cut short."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.groups.model import GroupResult


class GroupRefused(Exception):
    """The group cannot be snapshotted now; nothing was frozen or made."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class GroupInterrupted(asyncio.CancelledError):
    """The group was cancelled; every member was thawed and what they made removed (as far as
    `result` says) before this was raised."""

    def __init__(self, result: GroupResult) -> None:
        super().__init__(f"group {result.group_id} cancelled")
        self.result = result
