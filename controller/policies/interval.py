"""CloudStack's schedule form for snapshot policies: `intervaltype` and `schedule`.

Checked against Apache CloudStack's source (4.19-4.21):

- `DateUtil.getNextRunTime` (utils/src/main/java/com/cloud/utils/DateUtil.java) splits the
  schedule on ":" as MM[:HH][:DD]: HOURLY `MM`, DAILY `MM:HH`, WEEKLY `MM:HH:DD` where DD goes
  to `Calendar.DAY_OF_WEEK` (java.util.Calendar: 1 = SUNDAY ... 7 = SATURDAY), MONTHLY
  `MM:HH:DD` with DD the day of the month, refused above 28 ("Day cannot be greater than 28
  for monthly schedule"), so the 29th-31st never come up. The UI
  (ui/src/views/storage/FormSchedule.vue) agrees: weekdays listed from Sunday, sent as index
  + 1; days of the month offered 1-28.
- `intervaltype` is matched by name ignoring case; `listSnapshotPolicies` answers with the
  ordinal (0 HOURLY, 1 DAILY, 2 WEEKLY, 3 MONTHLY).

CloudStack's Calendar is lenient with out-of-range fields (minute 75 rolls into the next
hour); hostsnap refuses them instead, and a schedule with more parts than its interval uses.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from controller.policies.errors import ScheduleError
from controller.policies.rule import CalendarRule

WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MAX_MONTHLY_DAY = 28  # DateUtil.getNextRunTime refuses more

_ALL_MINUTES = frozenset(range(60))
_ALL_HOURS = frozenset(range(24))
_ALL_DAYS = frozenset(range(1, 32))
_ALL_MONTHS = frozenset(range(1, 13))
_ALL_WEEKDAYS = frozenset(range(7))


class IntervalType(enum.StrEnum):
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"

    @classmethod
    def parse(cls, value: str | int) -> IntervalType:
        """A name in any case, or the ordinal that listSnapshotPolicies gives."""
        members = list(cls)
        text = str(value).strip()
        if text.isascii() and text.isdigit() and int(text) < len(members):
            return members[int(text)]
        for member in members:
            if member.value == text.upper():
                return member
        raise ScheduleError(
            f"unknown interval type {value!r} (HOURLY, DAILY, WEEKLY, MONTHLY or 0-3)"
        )

    @property
    def schedule_form(self) -> str:
        return {
            IntervalType.HOURLY: "MM",
            IntervalType.DAILY: "MM:HH",
            IntervalType.WEEKLY: "MM:HH:DD (DD 1-7, 1 = Sunday)",
            IntervalType.MONTHLY: f"MM:HH:DD (DD 1-{MAX_MONTHLY_DAY})",
        }[self]


def parse_interval(interval_type: IntervalType, schedule: str) -> CalendarRule:
    parts = schedule.strip().split(":")
    wanted = {IntervalType.HOURLY: 1, IntervalType.DAILY: 2}.get(interval_type, 3)
    where = f"{interval_type} schedule {schedule!r}"
    if len(parts) != wanted:
        raise ScheduleError(f"{where}: expected {interval_type.schedule_form}")
    minute = _part(parts[0], "minute", 0, 59, where)
    hour = _part(parts[1], "hour", 0, 23, where) if wanted > 1 else None
    rule = CalendarRule(
        minutes=frozenset({minute}),
        hours=_ALL_HOURS if hour is None else frozenset({hour}),
        days=_ALL_DAYS,
        months=_ALL_MONTHS,
        weekdays=_ALL_WEEKDAYS,
        any_day_of_month=True,
        any_weekday=True,
        repeating=interval_type is IntervalType.HOURLY,
    )
    if interval_type is IntervalType.WEEKLY:
        weekday = _part(parts[2], "day of week", 1, 7, where)  # Calendar.DAY_OF_WEEK
        return replace(rule, weekdays=frozenset({weekday - 1}), any_weekday=False)
    if interval_type is IntervalType.MONTHLY:
        day = _part(parts[2], "day of month", 1, MAX_MONTHLY_DAY, where)
        return replace(rule, days=frozenset({day}), any_day_of_month=False)
    return rule


def describe_interval(interval_type: IntervalType, schedule: str) -> str:
    parts = [int(p) for p in schedule.strip().split(":")]
    if interval_type is IntervalType.HOURLY:
        return f"hourly at minute {parts[0]:02d}"
    time = f"{parts[1]:02d}:{parts[0]:02d}"
    if interval_type is IntervalType.DAILY:
        return f"daily at {time}"
    if interval_type is IntervalType.WEEKLY:
        return f"weekly on {WEEKDAY_NAMES[parts[2] - 1]} at {time}"
    return f"monthly on day {parts[2]} at {time}"


def _part(text: str, name: str, low: int, high: int, where: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ScheduleError(f"{where}: {name} {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{where}: {name} {value} is out of range {low}-{high}")
    return value
