"""CloudStack's caps on recurring snapshots per volume: snapshot.max.hourly, .daily, .weekly and
.monthly.

Their ConfigKeys in SnapshotManager (server/src/main/java/com/cloud/storage/snapshot/
SnapshotManager.java, 4.19-4.21) default to 8 each, and "If set to 0, recurring <interval>
snapshots can not be scheduled". createSnapshotPolicy refuses a maxsnaps above the cap
("maxSnaps [..] exceeds limit [..] for interval type [..]"); retention keeps
min(maxsnaps, cap), so lowering the cap later trims existing policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.policies.errors import RetentionError
from controller.policies.interval import IntervalType

DEFAULT_CAP = 8


@dataclass(frozen=True)
class RetentionCaps:
    hourly: int = DEFAULT_CAP
    daily: int = DEFAULT_CAP
    weekly: int = DEFAULT_CAP
    monthly: int = DEFAULT_CAP
    cron: int | None = None  # CloudStack has no cron policies: no cap unless one is set

    def __post_init__(self) -> None:
        for name in ("hourly", "daily", "weekly", "monthly", "cron"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise RetentionError(f"the {name} cap must not be negative, got {value}")

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> RetentionCaps:
        """From CloudStack's configuration (listConfigurations names and values); keys not
        given keep their defaults."""
        values: dict[str, int] = {}
        for kind in IntervalType:
            key = config_key(kind)
            if key in config:
                text = config[key].strip()
                if not (text.isascii() and text.isdigit()):
                    raise RetentionError(f"{key} = {config[key]!r} is not a whole number")
                values[kind.value.lower()] = int(text)
        return cls(**values)

    def cap(self, interval_type: IntervalType | None) -> int | None:
        if interval_type is None:
            return self.cron
        return int(getattr(self, interval_type.value.lower()))


def config_key(interval_type: IntervalType) -> str:
    return f"snapshot.max.{interval_type.value.lower()}"
