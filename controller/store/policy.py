"""Snapshot policies as the store keeps them: a schedule (CloudStack's intervaltype + schedule,
or cron), retention (maxsnaps), the quiesce requirement and what the policy selects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class IntervalType(StrEnum):
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


class Quiesce(StrEnum):
    REQUIRED = "required"
    PREFERRED = "preferred"
    NONE = "none"


class SelectorKind(StrEnum):
    VM = "vm"
    VOLUME = "volume"
    TAG = "tag"
    ACCOUNT = "account"


# CloudStack's `schedule` per intervaltype: MM, MM:HH, MM:HH:DD, each number within its range
# (DD is the day of the week for WEEKLY, of the month for MONTHLY).
_MINUTE, _HOUR = (0, 59), (0, 23)
_FORMS = {
    IntervalType.HOURLY: (_MINUTE,),
    IntervalType.DAILY: (_MINUTE, _HOUR),
    IntervalType.WEEKLY: (_MINUTE, _HOUR, (1, 7)),
    IntervalType.MONTHLY: (_MINUTE, _HOUR, (1, 28)),
}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/\-?]+$")


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e


@dataclass(frozen=True)
class IntervalSchedule:
    """CloudStack's form: `interval_type` and `schedule` as createSnapshotPolicy takes them."""

    interval_type: IntervalType
    schedule: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        form = _FORMS[self.interval_type]
        parts = self.schedule.split(":")
        if len(parts) != len(form) or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"{self.interval_type} schedule {self.schedule!r} is not {len(form)} numbers"
            )
        for part, (low, high) in zip(parts, form, strict=True):
            if not low <= int(part) <= high:
                raise ValueError(f"{self.interval_type} schedule {self.schedule!r} out of range")
        _check_timezone(self.timezone)


@dataclass(frozen=True)
class CronSchedule:
    """Five cron fields: minute hour day-of-month month day-of-week."""

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        fields = self.expression.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"cron expression {self.expression!r} is not five cron fields")
        object.__setattr__(self, "expression", " ".join(fields))
        _check_timezone(self.timezone)


Schedule = IntervalSchedule | CronSchedule


@dataclass(frozen=True)
class Selector:
    """What a policy covers: a VM, a volume or an account by CloudStack id, or a tag
    (`key` = `value`)."""

    kind: SelectorKind
    value: str
    key: str = ""

    def __post_init__(self) -> None:
        if not self.value:
            raise ValueError(f"a {self.kind} selector needs a value")
        if (self.kind is SelectorKind.TAG) != bool(self.key):
            raise ValueError("a tag selector needs a key, and only a tag selector has one")

    @classmethod
    def vm(cls, vm_id: str) -> Selector:
        return cls(SelectorKind.VM, vm_id)

    @classmethod
    def volume(cls, volume_id: str) -> Selector:
        return cls(SelectorKind.VOLUME, volume_id)

    @classmethod
    def account(cls, account_id: str) -> Selector:
        return cls(SelectorKind.ACCOUNT, account_id)

    @classmethod
    def tag(cls, key: str, value: str) -> Selector:
        return cls(SelectorKind.TAG, value, key)


@dataclass(frozen=True)
class PolicySpec:
    name: str
    schedule: Schedule
    max_snaps: int  # snapshots kept per volume; older ones are deleted
    quiesce: Quiesce = Quiesce.PREFERRED
    selectors: tuple[Selector, ...] = ()
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 255:
            raise ValueError("a policy needs a name of at most 255 characters")
        if self.max_snaps < 1:
            raise ValueError("max_snaps must be at least 1")
        if len(set(self.selectors)) != len(self.selectors):
            raise ValueError("a selector is given twice")


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    schedule: Schedule
    max_snaps: int
    quiesce: Quiesce
    selectors: tuple[Selector, ...]
    enabled: bool
    created_at: datetime
    updated_at: datetime
