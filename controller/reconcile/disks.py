"""Which of a VM's disks, as its agent lists them, is which CloudStack volume.

First by name: the disk's active image is the volume's recorded image, a hostsnap overlay of
the same original, or an open intent's new path. Then, for what is left, by position: KVM
names a volume's disk after its device id (0 -> vda, 1 -> vdb, ...), so a disk found only that
way is this volume with an image that differs for no known reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.agents import AgentVolume
from controller.inventory import Volume
from controller.reconcile.paths import same_volume


@dataclass(frozen=True)
class DiskMatch:
    disk: AgentVolume | None
    by_name: bool  # False: paired by device id only (or not at all)


def device_index(target: str) -> int | None:
    """vda -> 0, sdb -> 1, hdc -> 2; None for a target not so named."""
    if len(target) < 3 or not target[-1].isalpha() or not target[-1].islower():
        return None
    return ord(target[-1]) - ord("a")


def match_disks(
    volumes: Sequence[Volume],
    disks: Sequence[AgentVolume],
    intent_paths: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, DiskMatch]:
    """Each volume's disk (by volume id). `intent_paths`: the new paths of the volume's open
    intents, which name it too."""
    known = intent_paths or {}
    taken: set[str] = set()
    found: dict[str, DiskMatch] = {}
    for volume in volumes:
        names = [p for p in (volume.path, *known.get(volume.id, ())) if p]
        candidates = [
            d
            for d in disks
            if d.target not in taken and any(same_volume(d.location, n) for n in names)
        ]
        if len(candidates) == 1:
            taken.add(candidates[0].target)
            found[volume.id] = DiskMatch(candidates[0], True)
    for volume in volumes:
        if volume.id in found:
            continue
        by_position = [
            d
            for d in disks
            if d.target not in taken
            and volume.device_id is not None
            and device_index(d.target) == volume.device_id
        ]
        if len(by_position) == 1:
            taken.add(by_position[0].target)
            found[volume.id] = DiskMatch(by_position[0], False)
        else:
            found[volume.id] = DiskMatch(None, False)
    return found
