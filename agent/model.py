"""Plain data that travels between the layers: volumes, snapshots, requests and results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class VolumeKind(enum.StrEnum):
    FILE = "file"
    RBD = "rbd"


class Quiesce(enum.StrEnum):
    REQUIRED = "required"  # fail if the guest cannot be frozen
    PREFERRED = "preferred"  # fall back to crash-consistent, and say so
    NONE = "none"


class Consistency(enum.StrEnum):
    APPLICATION = "application"
    CRASH = "crash"
    UNKNOWN = "unknown"  # a snapshot in the agent's namespace that its journal does not know


class DomainState(enum.StrEnum):
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RbdSource:
    pool: str
    image: str
    monitors: tuple[str, ...] = ()
    config_file: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.image}"


@dataclass(frozen=True)
class RbdSnap:
    """A snapshot of an RBD image."""

    name: str
    snap_id: int
    created: float
    protected: bool


@dataclass(frozen=True)
class Volume:
    """One disk of a domain. Its identity is domain + target and the file path or pool/image."""

    domain: str
    target: str
    kind: VolumeKind
    format: str
    path: str | None = None  # the active image of a file disk
    rbd: RbdSource | None = None

    @property
    def location(self) -> str:
        if self.rbd is not None:
            return self.rbd.spec
        assert self.path is not None
        return self.path

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.target}"


@dataclass(frozen=True)
class Layer:
    """One image of a file disk's backing chain, active first."""

    path: str
    format: str
    virtual_size: int
    actual_size: int
    backing: str | None


@dataclass(frozen=True)
class SnapshotRequest:
    domain: str
    disks: tuple[str, ...] = ()  # target devs; empty means every disk
    quiesce: Quiesce = Quiesce.PREFERRED
    name: str = ""
    idempotency_key: str | None = None
    # A consistency group's member: taken under the group's hold (operations/group.py).
    group_id: str = ""


@dataclass(frozen=True)
class ImageSnapshotRequest:
    """Snapshots of RBD images without a domain: a stopped VM's volumes."""

    images: tuple[str, ...]  # "pool/image"
    quiesce: Quiesce = Quiesce.PREFERRED
    name: str = ""
    idempotency_key: str | None = None


@dataclass(frozen=True)
class DiskSnapshot:
    """What one disk got: for a file disk the layer that now holds the snapshot's content and
    the new active overlay; for RBD the snapshot name."""

    target: str
    kind: VolumeKind
    snapshot_id: str
    content: str  # file: the frozen layer's path; rbd: pool/image@snap
    active_image: str  # the disk's active image after the operation
    # qcow2-overlay; rbd-short-freeze (frozen only for a local overlay switch) or
    # rbd-frozen-across (frozen across the RBD snapshot call); "" when offline.
    method: str = ""


@dataclass(frozen=True)
class SnapshotResult:
    job_id: str
    domain: str
    consistency: Consistency
    frozen_seconds: float
    disks: tuple[DiskSnapshot, ...]
    quiesce_note: str = ""  # why the snapshot is only crash-consistent

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotResult:
        disks = tuple(DiskSnapshot(**{**d, "kind": VolumeKind(d["kind"])}) for d in data["disks"])
        return cls(**{**data, "consistency": Consistency(data["consistency"]), "disks": disks})


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    domain: str
    target: str
    kind: VolumeKind
    created: float
    consistency: Consistency
    content: str
    # Bytes the snapshot's layer occupies (file disks); None where not measured (RBD).
    size_on_disk: int | None
    # File: index in the active chain (1 = right below the active image; None = on another
    # branch after a revert). RBD: 0 for the newest snapshot, counting back.
    chain_position: int | None
    protected: bool = False


@dataclass(frozen=True)
class VolumeSnapshots:
    """A volume, its chain (file disks, active first) and its snapshots, newest first."""

    volume: Volume
    active_image: str
    chain: tuple[Layer, ...]
    snapshots: tuple[Snapshot, ...]

    @property
    def chain_depth(self) -> int:
        return len(self.chain)


@dataclass(frozen=True)
class RevertResult:
    job_id: str
    snapshot_id: str
    domain: str
    target: str
    active_image: str


@dataclass(frozen=True)
class DeleteResult:
    job_id: str
    snapshot_id: str
    domain: str
    target: str
    active_image: str
    removed: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""


@dataclass(frozen=True)
class DiskChainResult:
    """What a consolidate or flatten did to one disk."""

    target: str
    active_image: str
    depth_before: int
    depth_after: int
    removed: tuple[str, ...] = ()  # images (RBD: the parent link) that are gone
    snapshots_lost: tuple[str, ...] = ()  # a forced flatten: snapshots whose layers went
    note: str = ""


@dataclass(frozen=True)
class ChainResult:
    job_id: str
    domain: str
    disks: tuple[DiskChainResult, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChainResult:
        disks = tuple(
            DiskChainResult(
                **{
                    **d,
                    "removed": tuple(d["removed"]),
                    "snapshots_lost": tuple(d["snapshots_lost"]),
                }
            )
            for d in data["disks"]
        )
        return cls(data["job_id"], data["domain"], disks)


@dataclass(frozen=True)
class GroupHoldStatus:
    """A guest held frozen for a consistency group."""

    domain: str
    group_id: str
    job_id: str
    frozen: bool
    held_until: float  # wall clock
    remaining_seconds: float
    filesystems: int
