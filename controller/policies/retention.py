"""Retention: which of a volume's snapshots a policy deletes to keep `maxsnaps`.

CloudStack's rule (SnapshotManagerImpl.postCreateRecurringSnapshotForPolicy, 4.19-4.21): after
a recurring snapshot, list the volume's not-destroyed snapshots of that interval type, oldest
first, and delete the oldest while there are more than min(policy maxsnaps,
snapshot.max.<interval>) and more than one. hostsnap keeps that rule and makes it safer:

- only snapshots this policy made count or go (`policy_id`, from the tag the controller puts
  on each snapshot it takes); manual snapshots and other policies' are never touched;
- a snapshot in a transitional state (being made, backed up, copied or deleted) is neither
  counted nor deleted, and neither is one in Error (it may have left data behind; reconcile
  deals with it, CloudStack issue #3586);
- the newest usable snapshot is never deleted, whatever maxsnaps says.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.policies.errors import RetentionError

# The tag the controller puts on each snapshot it takes, naming the policy that took it.
POLICY_TAG = "hostsnap-policy"

# Snapshot.State (api/src/main/java/com/cloud/storage/Snapshot.java).
USABLE_STATES = frozenset({"BackedUp"})
TRANSITIONAL_STATES = frozenset(
    {"Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "Copying", "Destroying"}
)
FAILED_STATES = frozenset({"Error"})
GONE_STATES = frozenset({"Destroyed"})


@dataclass(frozen=True)
class SnapshotRecord:
    id: str
    volume_id: str
    created: datetime  # aware
    state: str  # Snapshot.State
    policy_id: str | None = None  # the hostsnap policy that took it; None: manual or foreign
    interval_type: str | None = None  # listSnapshots' intervaltype (MANUAL, HOURLY, ...)

    def __post_init__(self) -> None:
        if self.created.tzinfo is None or self.created.utcoffset() is None:
            raise RetentionError(f"snapshot {self.id}: created must be aware: {self.created}")


class Skip(enum.StrEnum):
    TRANSITIONAL = "transitional"  # being made, backed up, copied or deleted
    FAILED = "failed"  # in Error: left for reconcile
    UNKNOWN_STATE = "unknown-state"  # a state this code does not know: left alone


@dataclass(frozen=True)
class Skipped:
    snapshot: SnapshotRecord
    why: Skip


@dataclass(frozen=True)
class RetentionDecision:
    keep: int  # the effective maxsnaps
    delete: tuple[SnapshotRecord, ...]  # oldest first
    kept: tuple[SnapshotRecord, ...]  # usable ones that stay, oldest first
    skipped: tuple[Skipped, ...]  # this policy's, neither counted nor deleted


def decide(
    snapshots: Iterable[SnapshotRecord], *, volume_id: str, policy_id: str, keep: int
) -> RetentionDecision:
    """Which of `volume_id`'s snapshots made by `policy_id` to delete to keep `keep`."""
    if keep < 1:
        raise RetentionError(f"maxsnaps must be at least 1, got {keep}")
    mine = [s for s in snapshots if s.volume_id == volume_id and s.policy_id == policy_id]
    usable: list[SnapshotRecord] = []
    skipped: list[Skipped] = []
    for snapshot in sorted(mine, key=_age):
        if snapshot.state in USABLE_STATES:
            usable.append(snapshot)
        elif snapshot.state in GONE_STATES:
            continue
        elif snapshot.state in TRANSITIONAL_STATES:
            skipped.append(Skipped(snapshot, Skip.TRANSITIONAL))
        elif snapshot.state in FAILED_STATES:
            skipped.append(Skipped(snapshot, Skip.FAILED))
        else:
            skipped.append(Skipped(snapshot, Skip.UNKNOWN_STATE))
    excess = max(0, min(len(usable) - keep, len(usable) - 1))  # never the newest
    return RetentionDecision(
        keep=keep,
        delete=tuple(usable[:excess]),
        kept=tuple(usable[excess:]),
        skipped=tuple(skipped),
    )


def _age(snapshot: SnapshotRecord) -> tuple[datetime, str]:
    return (snapshot.created, snapshot.id)  # the id breaks ties, so the order is stable
