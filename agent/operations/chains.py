"""Backing-chain health, and which layers a consolidation may merge away.

A file volume's own images are its original image and the overlays hostsnap made on it
(`<original>.hostsnap-<id>`); anything below them (a template other volumes share) is never
written or removed. A layer may be merged away when it is one of the volume's own, holds no
kept snapshot, and backs exactly one image (after a revert a layer can back two branches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.model import Layer, Volume, VolumeKind
from agent.operations import merge, volumes
from agent.operations.reread import read_consistently
from agent.operations.services import Services


@dataclass(frozen=True)
class ChainLayer:
    path: str
    size_on_disk: int
    snapshots: tuple[str, ...]  # the kept snapshots whose content this layer is
    own: bool  # the volume's own image or a hostsnap overlay on it (else e.g. a template)
    children: int  # images whose backing file this is


@dataclass(frozen=True)
class MergeRun:
    """One block commit: `top` and the layers `between` go into `base`, which takes `top`'s
    place (its snapshots; the active image when `top` was active)."""

    top: str
    base: str
    between: tuple[str, ...]


@dataclass(frozen=True)
class ChainHealth:
    volume: Volume
    active_image: str
    # File: images in the chain, active first; RBD: the clone's ancestors, nearest first.
    layers: tuple[ChainLayer, ...]
    rbd_parents: tuple[str, ...]
    max_depth: int
    runs: tuple[MergeRun, ...]  # what a consolidation would merge

    @property
    def depth(self) -> int:
        """File: images in the chain; RBD: 1 plus the clone's ancestors."""
        return (
            len(self.layers) if self.volume.kind == VolumeKind.FILE else 1 + len(self.rbd_parents)
        )

    @property
    def over_limit(self) -> bool:
        return self.depth > self.max_depth

    @property
    def mergeable(self) -> int:
        return sum(1 + len(run.between) for run in self.runs)


def domain_health(svc: Services, domain: str, disks: tuple[str, ...]) -> list[ChainHealth]:
    return read_consistently(lambda: _domain_health(svc, domain, disks), f"domain {domain}")


def _domain_health(svc: Services, domain: str, disks: tuple[str, ...]) -> list[ChainHealth]:
    chosen = volumes.select(volumes.domain_volumes(svc, domain), disks)
    live = volumes.is_live(svc.host.state(domain)[0])
    return [health(svc, volume, live) for volume in chosen]


def health(svc: Services, volume: Volume, live: bool) -> ChainHealth:
    if volume.kind == VolumeKind.RBD:
        assert volume.rbd is not None
        parents = tuple(svc.rbd.parents(volume.rbd))
        return ChainHealth(volume, volume.location, (), parents, svc.config.max_chain_depth, ())
    chain = volumes.file_chain(svc, volume, live)
    kept: dict[str, list[str]] = {}
    for record in svc.journal.snapshots(volume.domain, volume.target):
        kept.setdefault(record.content, []).append(record.id)
    above: dict[str, list[str]] = {}
    for directory in {Path(layer.path).parent for layer in chain}:
        above |= merge.backed_by(directory)
    layers = tuple(
        _layer(layer, chain[0].path, kept.get(layer.path, []), above.get(layer.path, []))
        for layer in chain
    )
    return ChainHealth(
        volume, chain[0].path, layers, (), svc.config.max_chain_depth, tuple(merge_runs(layers))
    )


def _layer(layer: Layer, active: str, snapshots: list[str], children: list[str]) -> ChainLayer:
    own = is_own(layer.path, active)
    count = len(children) if layer.path != active else 0
    return ChainLayer(layer.path, layer.actual_size, tuple(snapshots), own, count)


def is_own(path: str, active: str) -> bool:
    """True for the volume's original image and the overlays hostsnap made on it."""
    layer, top = Path(path), Path(active)
    original = volumes.OVERLAY_SUFFIX.sub("", top.name)
    return layer.parent == top.parent and volumes.OVERLAY_SUFFIX.sub("", layer.name) == original


def merge_runs(layers: tuple[ChainLayer, ...]) -> list[MergeRun]:
    """Each stretch of layers that may go, with the layer above it: one commit each."""

    def removable(layer: ChainLayer) -> bool:
        return layer.own and not layer.snapshots and layer.children == 1

    runs = []
    i = 1
    while i < len(layers):
        if not removable(layers[i]):
            i += 1
            continue
        j = i
        while j + 1 < len(layers) and removable(layers[j + 1]):
            j += 1
        between = tuple(layer.path for layer in layers[i:j])
        runs.append(MergeRun(layers[i - 1].path, layers[j].path, between))
        i = j + 1
    return runs
