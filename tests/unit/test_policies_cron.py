"""Cron schedules: fields, ranges, steps, lists and names; the day-of-month / day-of-week rule
(OR when both are restricted, as Vixie cron and cronie have it, quirk included); month ends and
leap years; DST for repeating and fixed-time expressions; and the errors."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from controller.policies import Schedule, ScheduleError

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def runs(expression: str, start: str, end: str, tz: str = "UTC") -> list[str]:
    schedule = Schedule.cron(expression, tz)
    zone = ZoneInfo(tz)
    return [
        r.astimezone(zone).strftime("%a %Y-%m-%d %H:%M")
        for r in schedule.runs_between(at(start), at(end))
    ]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2024-05-01 00:07", "2024-05-01 00:15"),
        ("*/15 * * * *", "2024-05-01 23:45", "2024-05-02 00:00"),
        ("5,10,55 * * * *", "2024-05-01 00:10", "2024-05-01 00:55"),
        ("0 9-17/4 * * *", "2024-05-01 10:00", "2024-05-01 13:00"),  # 9, 13, 17
        ("0 9-17/4 * * *", "2024-05-01 17:00", "2024-05-02 09:00"),
        ("30 2 * * *", "2024-05-01 02:30", "2024-05-02 02:30"),
        ("0 0 1 * *", "2024-12-01 00:00", "2025-01-01 00:00"),
        ("0 0 31 * *", "2024-01-31 00:00", "2024-03-31 00:00"),  # no 31st in February
        ("0 0 31 * *", "2024-05-31 00:00", "2024-07-31 00:00"),  # nor in June
        ("0 0 30 * *", "2024-01-30 00:00", "2024-03-30 00:00"),
        ("0 12 29 2 *", "2023-03-01 00:00", "2024-02-29 12:00"),  # leap day
        ("0 12 29 2 *", "2024-03-01 00:00", "2028-02-29 12:00"),
        ("0 12 29 2 *", "2096-03-01 00:00", "2104-02-29 12:00"),  # 2100 is no leap year
        ("0 0 * * mon-fri", "2024-05-03 01:00", "2024-05-06 00:00"),  # Friday -> Monday
        ("0 0 1 jan,JUL *", "2024-01-01 00:00", "2024-07-01 00:00"),
        ("59 23 31 12 *", "2024-12-31 23:58", "2024-12-31 23:59"),
        ("@hourly", "2024-05-01 10:00", "2024-05-01 11:00"),
        ("@daily", "2024-05-01 10:00", "2024-05-02 00:00"),
        ("@midnight", "2024-05-01 10:00", "2024-05-02 00:00"),
        ("@weekly", "2024-05-01 10:00", "2024-05-05 00:00"),  # Sunday
        ("@monthly", "2024-05-01 10:00", "2024-06-01 00:00"),
        ("@yearly", "2024-05-01 10:00", "2025-01-01 00:00"),
        ("@ANNUALLY", "2024-05-01 10:00", "2025-01-01 00:00"),
    ],
)
def test_next_run_of_a_cron_expression(expression, after, expected):
    assert Schedule.cron(expression).next_run(at(after)) == at(expected)


def test_day_of_week_0_and_7_and_sun_are_all_sunday():
    sundays = {Schedule.cron(f"0 0 * * {d}").next_run(at("2024-05-01 00:00")) for d in "07"}
    sundays.add(Schedule.cron("0 0 * * SUN").next_run(at("2024-05-01 00:00")))
    assert sundays == {at("2024-05-05 00:00")}


def test_a_weekday_range_up_to_7_includes_sunday():
    assert runs("0 0 * * 5-7", "2024-05-01 00:00", "2024-05-08 00:00") == [
        "Fri 2024-05-03 00:00",
        "Sat 2024-05-04 00:00",
        "Sun 2024-05-05 00:00",
    ]


def test_both_day_fields_restricted_means_either_matches():
    # Vixie cron: "0 0 13 * fri" runs on every 13th AND on every Friday.
    assert runs("0 0 13 * fri", "2024-05-01 00:00", "2024-06-01 00:00") == [
        "Fri 2024-05-03 00:00",
        "Fri 2024-05-10 00:00",
        "Mon 2024-05-13 00:00",
        "Fri 2024-05-17 00:00",
        "Fri 2024-05-24 00:00",
        "Fri 2024-05-31 00:00",
    ]


def test_an_unrestricted_day_field_means_the_other_alone_decides():
    assert runs("0 0 * * fri", "2024-05-01 00:00", "2024-05-20 00:00") == [
        "Fri 2024-05-03 00:00",
        "Fri 2024-05-10 00:00",
        "Fri 2024-05-17 00:00",
    ]
    assert runs("0 0 13 * *", "2024-05-01 00:00", "2024-07-01 00:00") == [
        "Mon 2024-05-13 00:00",
        "Thu 2024-06-13 00:00",
    ]


def test_a_day_field_starting_with_star_counts_as_unrestricted_as_in_vixie_cron():
    # "*/2" restricts the days to odd ones, but starts with "*": both must match (odd Fridays).
    assert runs("0 0 */2 * fri", "2024-05-01 00:00", "2024-06-01 00:00") == [
        "Fri 2024-05-03 00:00",
        "Fri 2024-05-17 00:00",
        "Fri 2024-05-31 00:00",
    ]
    # The same days written "1-31/2" are restricted: either matches (odd days and Fridays).
    either = runs("0 0 1-31/2 * fri", "2024-05-01 00:00", "2024-06-01 00:00")
    assert len(either) == 16 + 2  # 16 odd days, and Fridays 10 and 24


def test_steps_on_ranges_and_lists_combine():
    assert runs("0,20-40/10 10 * * *", "2024-05-01 00:00", "2024-05-01 23:00") == [
        "Wed 2024-05-01 10:00",
        "Wed 2024-05-01 10:20",
        "Wed 2024-05-01 10:30",
        "Wed 2024-05-01 10:40",
    ]
    # A step larger than its range leaves the first value only.
    assert runs("0 1-5/10 * * *", "2024-05-01 00:00", "2024-05-02 00:00") == [
        "Wed 2024-05-01 01:00"
    ]


def test_month_names_work_in_ranges_and_any_case():
    assert runs("0 0 1 Nov-dec *", "2024-01-01 00:00", "2025-01-01 00:00") == [
        "Fri 2024-11-01 00:00",
        "Sun 2024-12-01 00:00",
    ]


def test_a_day_that_only_some_months_have_skips_the_others():
    assert runs("0 0 31 4-8 *", "2024-01-01 00:00", "2025-01-01 00:00") == [
        "Fri 2024-05-31 00:00",
        "Wed 2024-07-31 00:00",
        "Sat 2024-08-31 00:00",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "needs 5 fields .* got 4"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
        ("60 * * * *", "minute '60': 60 is out of range 0-59"),
        ("* 24 * * *", "hour '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day of month '0': 0 is out of range 1-31"),
        ("* * 32 * *", "32 is out of range 1-31"),
        ("* * * 13 *", "month '13': 13 is out of range 1-12"),
        ("* * * * 8", "day of week '8': 8 is out of range 0-7"),
        ("5/15 * * * *", r"a step needs a range or '\*' \(write 5-59/15\)"),
        ("*/0 * * * *", "the step must be a whole number from 1"),
        ("*/x * * * *", "the step must be a whole number from 1"),
        ("10-5 * * * *", r"range goes backwards \(10 > 5\)"),
        ("a * * * *", "'a' is not a number"),
        ("* * * foo *", r"'foo' is not a number or a name \(jan-dec\)"),
        ("* * * * funday", r"or a name \(sun-sat\)"),
        (",5 * * * *", "empty item in the minute field"),
        ("5, * * * *", "empty item in the minute field"),
        ("¹ * * * *", "is not a number"),
        ("-5 * * * *", "is not a number"),
        ("0 0 30 2 *", "never runs"),
        ("0 0 31 4,6,9,11 *", "never runs"),
        ("@reboot", "unknown macro"),
        ("@every 5m", "unknown macro"),
    ],
)
def test_a_bad_cron_expression_says_what_is_wrong(expression, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.cron(expression)


def test_30_february_with_a_weekday_is_fine_since_either_day_field_matches():
    assert runs("0 0 30 2 mon", "2024-02-01 00:00", "2024-03-01 00:00") == [
        "Mon 2024-02-05 00:00",
        "Mon 2024-02-12 00:00",
        "Mon 2024-02-19 00:00",
        "Mon 2024-02-26 00:00",
    ]


# -- DST. America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
# An expression whose minute or hour field starts with "*" repeats (cronie's "wildcard" jobs):
# it runs at real instants. Any other is fixed-time: once per wall-clock time, shifted out of
# a gap.


def test_a_fixed_time_expression_runs_once_in_the_autumn_overlap():
    assert runs("0,30 1 * * *", "2024-11-03 04:00", "2024-11-03 08:00", "America/New_York") == [
        "Sun 2024-11-03 01:00",
        "Sun 2024-11-03 01:30",
    ]
    first = Schedule.cron("30 1 * * *", "America/New_York").next_run(at("2024-11-03 04:00"))
    assert first.astimezone(NEW_YORK).strftime("%H:%M %Z") == "01:30 EDT"


def test_a_repeating_expression_runs_through_the_repeated_hour_twice():
    repeated = Schedule.cron("*/30 1 * * *", "America/New_York").runs_between(
        at("2024-11-03 04:00"), at("2024-11-03 08:00")
    )
    assert [r.astimezone(NEW_YORK).strftime("%H:%M %Z") for r in repeated] == [
        "01:00 EDT",
        "01:30 EDT",
        "01:00 EST",
        "01:30 EST",
    ]


def test_a_fixed_time_in_the_spring_gap_is_shifted_and_a_repeating_one_skipped():
    fixed = Schedule.cron("30 2 * * *", "America/New_York")
    repeating = Schedule.cron("*/30 2 * * *", "America/New_York")

    run = fixed.next_run(at("2024-03-10 00:00"))

    assert run.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z") == "2024-03-10 03:30 EDT"
    assert repeating.runs_between(at("2024-03-10 06:00"), at("2024-03-10 09:00")) == ()
    assert repeating.next_run(at("2024-03-10 06:00")) == at("2024-03-11 06:00")  # 02:00 EDT


def test_a_time_shifted_out_of_the_gap_onto_another_is_run_once():
    # 02:30 CET does not exist on 2024-03-31 and becomes 03:30 CEST, which is also listed.
    schedule = Schedule.cron("30 2,3 * * *", "Europe/Berlin")

    day = schedule.runs_between(at("2024-03-30 22:00"), at("2024-03-31 12:00"))

    assert day == (at("2024-03-31 01:30"),)


def test_every_minute_across_a_week_is_quick_and_complete():
    schedule = Schedule.cron("* * * * *", "Europe/Berlin")

    week = schedule.runs_between(at("2024-10-21 00:00"), at("2024-10-28 00:00"))

    assert len(week) == 7 * 24 * 60  # the repeated hour is a real hour: nothing lost or doubled
    assert len(set(week)) == len(week)


def test_describe_quotes_the_expression_and_zone():
    assert Schedule.cron("0 3 * * 1-5", "Europe/Berlin").describe() == (
        "cron '0 3 * * 1-5' Europe/Berlin"
    )


def test_an_expression_is_kept_with_its_fields_separated_by_one_space():
    schedule = Schedule.cron(" 15  */6 * *\t1-5 ", "America/New_York")

    assert schedule.expression == "15 */6 * * 1-5"
    assert schedule == Schedule.cron("15 */6 * * 1-5", "America/New_York")


def test_equal_schedules_compare_equal_and_hash_alike():
    a, b = Schedule.cron("0 3 * * *", "UTC"), Schedule.cron("0 3 * * *", "UTC")
    assert a == b and hash(a) == hash(b)
    assert a != Schedule.cron("0 3 * * *", "Europe/Berlin")
