"""Five-field cron expressions, with the semantics of Vixie cron (Debian's `cron`) and cronie.

    minute hour day-of-month month day-of-week      e.g. "30 2 * * 1-5", "*/15 * * * *"

- Each field is a list of items separated by commas; an item is `*`, a number `N`, a range
  `N-M`, or `*` or a range followed by a step `/S`. `N/S` alone is refused, as Vixie cron
  does (write `N-59/S`).
- Months and days of the week may be given by name (`jan`-`dec`, `sun`-`sat`, any case), also
  in ranges; day of week 0 and 7 are both Sunday.
- Day rule: when both day-of-month and day-of-week are restricted, a day matches if *either*
  matches ("0 0 1,15 * mon" runs on the 1st, the 15th and every Monday); when one of them
  starts with `*`, a day must match both. As in Vixie cron, a field counts as unrestricted
  whenever it starts with `*`, so "*/2" is unrestricted for this rule.
- `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand
  for their usual expressions; `@reboot` means nothing to a snapshot schedule and is refused.
- Across DST changes an expression whose minute or hour field starts with `*` repeats (runs
  at real instants); any other is fixed-time (see wallclock.py). This is cronie's split
  between "wildcard" and "fixed-time" jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.policies.errors import ScheduleError
from controller.policies.rule import CalendarRule

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)


def parse_cron(expression: str) -> CalendarRule:
    """The rule of a cron expression; ScheduleError says what is wrong and where."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            known = ", ".join(sorted(MACROS))
            raise ScheduleError(f"cron {expression!r}: unknown macro (known: {known})")
        text = MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron {expression!r}: needs 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(value, spec, expression) for value, spec in zip(fields, _FIELDS, strict=True)
    )
    rule = CalendarRule(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(day % 7 for day in weekdays),  # 7 is Sunday too
        any_day_of_month=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
        repeating=fields[0].startswith("*") or fields[1].startswith("*"),
    )
    if not rule.can_match():
        raise ScheduleError(
            f"cron {expression!r}: never runs (no month has such a day of the month)"
        )
    return rule


def _parse_field(value: str, spec: _Field, expression: str) -> frozenset[int]:
    selected: set[int] = set()
    for item in value.split(","):
        if not item:
            raise ScheduleError(f"cron {expression!r}: empty item in the {spec.name} field")
        selected.update(_parse_item(item, spec, expression))
    return frozenset(selected)


def _parse_item(item: str, spec: _Field, expression: str) -> range:
    where = f"cron {expression!r}: {spec.name} {item!r}"
    base, slash, step_text = item.partition("/")
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _number(first, spec, where), _number(last, spec, where)
        if low > high:
            raise ScheduleError(f"{where}: range goes backwards ({low} > {high})")
    else:
        low = high = _number(base, spec, where)
        if slash:
            raise ScheduleError(
                f"{where}: a step needs a range or '*' (write {base}-{spec.high}/{step_text})"
            )
    step = 1
    if slash:
        if not _is_number(step_text) or int(step_text) < 1:
            raise ScheduleError(f"{where}: the step must be a whole number from 1")
        step = int(step_text)
    return range(low, high + 1, step)


def _number(text: str, spec: _Field, where: str) -> int:
    if text.lower() in spec.names:
        return spec.low + spec.names.index(text.lower())
    if not _is_number(text):
        hint = f" or a name ({spec.names[0]}-{spec.names[-1]})" if spec.names else ""
        raise ScheduleError(f"{where}: {text!r} is not a number{hint}")
    number = int(text)
    if not spec.low <= number <= spec.high:
        raise ScheduleError(f"{where}: {number} is out of range {spec.low}-{spec.high}")
    return number


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()
