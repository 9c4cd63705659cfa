"""A policy's schedule: CloudStack's interval form or a cron expression, in an IANA time zone.

`next_run(after)` and `runs_between(start, end)` take and give aware datetimes; what they
give is in UTC. Wall-clock times are those of the schedule's time zone, with DST gaps and
overlaps handled as wallclock.py says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice, takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.policies.cron import parse_cron
from controller.policies.errors import ScheduleError
from controller.policies.interval import IntervalType, describe_interval, parse_interval
from controller.policies.rule import CalendarRule


class ScheduleKind(enum.StrEnum):
    CLOUDSTACK = "cloudstack"  # intervaltype + schedule, as createSnapshotPolicy takes them
    CRON = "cron"


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind
    expression: str  # CloudStack's `schedule` (e.g. "30:02") or the cron expression, its
    # fields separated by one space
    timezone: str = "UTC"  # an IANA name, e.g. Europe/Berlin
    interval_type: IntervalType | None = None  # CloudStack form only
    _rule: CalendarRule = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", " ".join(self.expression.split()))
        if self.kind is ScheduleKind.CLOUDSTACK:
            if self.interval_type is None:
                raise ScheduleError("a CloudStack-form schedule needs its interval type")
            rule = parse_interval(self.interval_type, self.expression)
        else:
            if self.interval_type is not None:
                raise ScheduleError("a cron schedule has no interval type")
            rule = parse_cron(self.expression)
        object.__setattr__(self, "_rule", rule)
        object.__setattr__(self, "_zone", zone(self.timezone))

    @classmethod
    def cloudstack(
        cls, interval_type: IntervalType | str | int, schedule: str, timezone: str = "UTC"
    ) -> Schedule:
        """As createSnapshotPolicy takes it: ("DAILY", "30:02", "Europe/Berlin")."""
        kind = IntervalType.parse(interval_type)
        return cls(ScheduleKind.CLOUDSTACK, schedule, timezone, kind)

    @classmethod
    def cron(cls, expression: str, timezone: str = "UTC") -> Schedule:
        return cls(ScheduleKind.CRON, expression, timezone)

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after `after`, in UTC."""
        return next(self._rule.walk(_aware(after, "after"), self._zone))

    def runs_between(
        self, start: datetime, end: datetime, *, limit: int | None = None
    ) -> tuple[datetime, ...]:
        """The runs in (start, end], in UTC and in order; at most `limit` of them."""
        start, end = _aware(start, "start"), _aware(end, "end")
        if end <= start:
            return ()
        runs = takewhile(lambda run: run <= end, self._rule.walk(start, self._zone))
        return tuple(islice(runs, limit))

    def describe(self) -> str:
        if self.interval_type is not None:
            when = describe_interval(self.interval_type, self.expression)
            return f"{when} {self.timezone} ({self.interval_type} {self.expression})"
        return f"cron {self.expression!r} {self.timezone}"


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`. Unlike CloudStack, which falls back to GMT for a name it
    does not know, an unknown name is an error."""
    if not name or name != name.strip():
        raise ScheduleError(f"time zone {name!r}: give an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin or UTC"
        ) from None


def _aware(when: datetime, name: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ScheduleError(f"{name} must be an aware datetime (with a time zone): {when}")
    return when
