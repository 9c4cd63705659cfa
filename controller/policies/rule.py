"""The calendar both schedule forms compile to: sets of minutes, hours, days of the month,
months and days of the week, with cron's day rule, walked forward to give instants."""

from __future__ import annotations

import calendar
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from controller.policies.errors import ScheduleError
from controller.policies.wallclock import instants

# A rule that matches nowhere in this many years never will: the rarest day a valid rule can
# need is 29 February on given weekdays, which comes round within 40 years.
SEARCH_YEARS = 50
# UTC offsets stay within a day of the wall time, so a day's runs all come after the instant
# of that day's midnight taken as UTC minus one day.
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class CalendarRule:
    minutes: frozenset[int]  # 0-59
    hours: frozenset[int]  # 0-23
    days: frozenset[int]  # days of the month, 1-31
    months: frozenset[int]  # 1-12
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    # cron's day rule: when both day fields are restricted a day matches either of them; when
    # one of them is unrestricted ("*"), it must match both.
    any_day_of_month: bool
    any_weekday: bool
    # A repeating rule (every hour, every minute) runs at real instants across DST changes;
    # a fixed-time rule runs once per wall-clock time (see wallclock.py).
    repeating: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays  # date.weekday(): Monday = 0
        if self.any_day_of_month or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def can_match(self) -> bool:
        """Whether some calendar day matches: 30 February alone never comes."""
        if not (self.minutes and self.hours and self.days and self.months and self.weekdays):
            return False
        if not (self.any_day_of_month or self.any_weekday):
            return True  # any of the weekdays will do
        longest = {month: calendar.monthrange(2024, month)[1] for month in self.months}  # leap
        return any(day <= longest[month] for month in self.months for day in self.days)

    def walk(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """The instants (UTC, ascending, each once) of this rule strictly after `after`."""
        after = after.astimezone(UTC)
        # Start a day early: a time of the day before may be shifted past midnight by a gap.
        day = after.astimezone(tz).date() - _ONE_DAY
        pending: list[datetime] = []
        last: datetime | None = None
        idle_days = 0
        while True:
            if self.matches_day(day):
                idle_days = 0
                for run in self._day_instants(day, tz):
                    if run > after:
                        heapq.heappush(pending, run)
            else:
                idle_days += 1
                if idle_days > SEARCH_YEARS * 366:
                    raise ScheduleError(f"no run in the {SEARCH_YEARS} years after {day}")
            day += _ONE_DAY
            settled = datetime(day.year, day.month, day.day, tzinfo=UTC) - _ONE_DAY
            while pending and pending[0] < settled:
                run = heapq.heappop(pending)
                if run != last:
                    last = run
                    yield run

    def _day_instants(self, day: date, tz: ZoneInfo) -> list[datetime]:
        runs: list[datetime] = []
        for hour in sorted(self.hours):
            for minute in sorted(self.minutes):
                wall = datetime(day.year, day.month, day.day, hour, minute)
                runs.extend(instants(wall, tz, repeating=self.repeating))
        return runs
