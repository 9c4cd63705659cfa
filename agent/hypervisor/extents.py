"""An extent of a disk image, as backups read and restores write them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    zero: bool  # reads as zeroes: nothing to read, a zero record to send


def coalesce(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Adjacent extents of the same kind joined, in order."""
    pending: Extent | None = None
    for extent in extents:
        if (
            pending is not None
            and pending.zero == extent.zero
            and pending.offset + pending.length == extent.offset
        ):
            pending = Extent(pending.offset, pending.length + extent.length, extent.zero)
            continue
        if pending is not None:
            yield pending
        pending = extent
    if pending is not None:
        yield pending
