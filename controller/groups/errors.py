"""Why a consistency group was refused before anything was frozen."""

from __future__ import annotations


class GroupRefused(Exception):
    """The group cannot be snapshotted now; nothing was frozen or made."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)
