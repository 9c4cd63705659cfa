"""A snapshot policy: when (schedule), what (selector), how many to keep (maxsnaps) and
whether the guest must be frozen (quiesce)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from controller.policies.caps import RetentionCaps, config_key
from controller.policies.errors import PolicyError, RetentionError
from controller.policies.schedule import Schedule
from controller.policies.selection import Selector

MAX_NAME = 255  # the store's column


class Quiesce(enum.StrEnum):
    """As the agent takes it (hostsnap snapshot create --quiesce)."""

    REQUIRED = "required"  # the snapshot fails if the guest cannot be frozen
    PREFERRED = "preferred"  # crash-consistent when the guest cannot be frozen, and says so
    NONE = "none"  # crash-consistent

    @classmethod
    def parse(cls, value: str) -> Quiesce:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise PolicyError(f"quiesce {value!r}: required, preferred or none") from None


# The agent's rule for a backup target's name (agent/validate.py).
BACKUP_TARGET = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    schedule: Schedule
    max_snaps: int  # CloudStack's maxsnaps: snapshots of this policy kept per volume
    selector: Selector
    quiesce: Quiesce = Quiesce.PREFERRED
    enabled: bool = True
    # Each snapshot backed up to this target of the agents (hostsnap backup target), its
    # backups kept `keep_backups` per volume there (None: all), apart from max_snaps.
    backup_target: str | None = None
    keep_backups: int | None = None

    def __post_init__(self) -> None:
        if not self.id.strip():
            raise PolicyError("a policy needs an id")
        if not self.name or len(self.name) > MAX_NAME:
            raise PolicyError(f"a policy needs a name of at most {MAX_NAME} characters")
        if self.max_snaps < 1:
            # createSnapshotPolicy: "maxSnaps [..] for volume .. should be greater than 0."
            raise RetentionError(f"policy {self.name}: maxsnaps must be at least 1")
        if self.backup_target is not None and not BACKUP_TARGET.match(self.backup_target):
            raise PolicyError(
                f"policy {self.name}: backup target {self.backup_target!r}: lower-case letters,"
                " digits, - and _, as `hostsnap backup target add` names them"
            )
        if self.keep_backups is not None and (self.backup_target is None or self.keep_backups < 1):
            raise RetentionError(
                f"policy {self.name}: keep-backups needs a backup target and must be at least 1"
            )

    def keep(self, caps: RetentionCaps) -> int:
        """How many to keep under CloudStack's caps: min(maxsnaps, cap), as CloudStack's
        retention does. A cap of 0 means this interval cannot be scheduled at all."""
        cap = caps.cap(self.schedule.interval_type)
        if cap is None:
            return self.max_snaps
        if cap == 0:
            raise RetentionError(self._cap_name() + " is 0: such policies cannot be scheduled")
        return min(self.max_snaps, cap)

    def cap_problem(self, caps: RetentionCaps) -> str | None:
        """What createSnapshotPolicy would refuse: a maxsnaps above the cap."""
        cap = caps.cap(self.schedule.interval_type)
        if cap is None or self.max_snaps <= cap:
            return None
        return (
            f"maxsnaps {self.max_snaps} exceeds {self._cap_name()} ({cap}); "
            f"{min(self.max_snaps, cap)} are kept"
        )

    def _cap_name(self) -> str:
        kind = self.schedule.interval_type
        return "the cron cap" if kind is None else config_key(kind)
