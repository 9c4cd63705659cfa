"""Schedules in CloudStack's interval form (intervaltype + schedule + timezone): next runs across
hour, day, month and year ends, leap years, weekday numbering as CloudStack has it, DST gaps and
overlaps in Europe/Berlin and America/New_York, runs_between for catch-up, and the errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from controller.policies import IntervalType, Schedule, ScheduleError, ScheduleKind

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    """A UTC instant from "YYYY-MM-DD HH:MM"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(instant: datetime, tz: ZoneInfo) -> str:
    """The wall-clock time with its zone abbreviation, e.g. "2024-03-31 03:30 CEST"."""
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(
    ("interval", "schedule", "after", "expected"),
    [
        # HOURLY MM
        ("HOURLY", "15", "2024-05-01 10:00", "2024-05-01 10:15"),
        ("HOURLY", "15", "2024-05-01 10:15", "2024-05-01 11:15"),  # strictly after
        ("HOURLY", "0", "2024-05-01 10:00", "2024-05-01 11:00"),
        ("HOURLY", "15", "2024-12-31 23:20", "2025-01-01 00:15"),  # into a new year
        # DAILY MM:HH
        ("DAILY", "30:02", "2024-05-01 01:00", "2024-05-01 02:30"),
        ("DAILY", "30:02", "2024-05-01 02:30", "2024-05-02 02:30"),
        ("DAILY", "30:02", "2024-02-28 03:00", "2024-02-29 02:30"),  # leap year
        ("DAILY", "30:02", "2023-02-28 03:00", "2023-03-01 02:30"),
        ("DAILY", "30:02", "2024-04-30 03:00", "2024-05-01 02:30"),  # 30-day month end
        ("DAILY", "59:23", "2024-12-31 23:59", "2025-01-01 23:59"),
        # WEEKLY MM:HH:DD (2024-05-01 is a Wednesday, DD 4)
        ("WEEKLY", "00:03:4", "2024-05-01 00:00", "2024-05-01 03:00"),
        ("WEEKLY", "00:03:4", "2024-05-01 03:00", "2024-05-08 03:00"),
        ("WEEKLY", "00:03:1", "2024-05-01 00:00", "2024-05-05 03:00"),
        ("WEEKLY", "00:03:1", "2024-12-30 00:00", "2025-01-05 03:00"),
        # MONTHLY MM:HH:DD
        ("MONTHLY", "00:01:28", "2024-02-28 01:00", "2024-03-28 01:00"),
        ("MONTHLY", "00:01:28", "2023-01-31 00:00", "2023-02-28 01:00"),  # short February
        ("MONTHLY", "00:00:1", "2024-12-15 00:00", "2025-01-01 00:00"),
        ("MONTHLY", "15:06:15", "2024-05-15 06:14", "2024-05-15 06:15"),
    ],
)
def test_next_run_of_the_cloudstack_form_in_utc(interval, schedule, after, expected):
    assert Schedule.cloudstack(interval, schedule).next_run(at(after)) == at(expected)


# CloudStack's weekly DD is java.util.Calendar.DAY_OF_WEEK: 1 = Sunday ... 7 = Saturday.
# Checked in apache/cloudstack utils/src/main/java/com/cloud/utils/DateUtil.java,
# getNextRunTime: `scheduleTime.set(Calendar.DAY_OF_WEEK, day)`; and the UI that writes the
# schedule, ui/src/views/storage/FormSchedule.vue: days listed from 'sunday', sent as index + 1.
@pytest.mark.parametrize(
    ("day", "name"),
    [
        (1, "Sunday"),
        (2, "Monday"),
        (3, "Tuesday"),
        (4, "Wednesday"),
        (5, "Thursday"),
        (6, "Friday"),
        (7, "Saturday"),
    ],
)
def test_weekly_day_numbers_follow_cloudstack_with_1_for_sunday(day, name):
    schedule = Schedule.cloudstack("WEEKLY", f"30:12:{day}")

    runs = schedule.runs_between(at("2024-05-01 00:00"), at("2024-05-22 00:00"))

    assert [run.strftime("%A %H:%M") for run in runs] == [f"{name} 12:30"] * 3
    assert runs[1] - runs[0] == timedelta(days=7)
    assert name in schedule.describe()


def test_monthly_days_above_28_are_refused_as_cloudstack_does():
    # DateUtil.getNextRunTime: "Day cannot be greater than 28 for monthly schedule"; the UI
    # offers 1-28. So no CloudStack policy runs on the 29th-31st, and none here does either.
    for day in (29, 30, 31):
        with pytest.raises(ScheduleError, match=f"day of month {day} is out of range 1-28"):
            Schedule.cloudstack("MONTHLY", f"00:01:{day}")


def test_monthly_on_the_28th_runs_every_month_of_a_year_leap_or_not():
    schedule = Schedule.cloudstack("MONTHLY", "00:01:28")
    for year in (2023, 2024):
        runs = schedule.runs_between(at(f"{year}-01-01 00:00"), at(f"{year}-12-31 23:59"))
        assert [(r.month, r.day) for r in runs] == [(m, 28) for m in range(1, 13)]


def test_interval_types_are_read_by_name_in_any_case_or_by_the_api_ordinal():
    # listSnapshotPolicies answers with the ordinal: 0 HOURLY, 1 DAILY, 2 WEEKLY, 3 MONTHLY.
    assert Schedule.cloudstack(1, "30:02") == Schedule.cloudstack("daily", "30:02")
    assert Schedule.cloudstack("3", "00:01:5").interval_type is IntervalType.MONTHLY
    assert Schedule.cloudstack(IntervalType.HOURLY, "5").kind is ScheduleKind.CLOUDSTACK
    with pytest.raises(ScheduleError, match="unknown interval type 'YEARLY'"):
        Schedule.cloudstack("YEARLY", "00:01:01")
    with pytest.raises(ScheduleError, match="unknown interval type 4"):
        Schedule.cloudstack(4, "00:01:01")


@pytest.mark.parametrize(
    ("interval", "schedule", "message"),
    [
        ("HOURLY", "60", "minute 60 is out of range 0-59"),
        ("HOURLY", "30:02", r"expected MM$"),
        ("DAILY", "30", "expected MM:HH"),
        ("DAILY", "30:24", "hour 24 is out of range 0-23"),
        ("DAILY", "3O:02", "minute '3O' is not a number"),
        ("DAILY", "-1:02", "minute '-1' is not a number"),
        ("DAILY", "", "expected MM:HH"),
        ("WEEKLY", "00:03", r"expected MM:HH:DD \(DD 1-7, 1 = Sunday\)"),
        ("WEEKLY", "00:03:0", "day of week 0 is out of range 1-7"),
        ("WEEKLY", "00:03:8", "day of week 8 is out of range 1-7"),
        ("MONTHLY", "00:03:0", "day of month 0 is out of range 1-28"),
    ],
)
def test_a_bad_cloudstack_schedule_says_what_is_wrong(interval, schedule, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.cloudstack(interval, schedule)


def test_time_zones_are_iana_names_and_an_unknown_one_is_an_error():
    # CloudStack falls back to GMT for a name it does not know; hostsnap refuses it.
    for name in ("Mars/Olympus_Mons", "", " Europe/Berlin", "../../etc/passwd", "Europe"):
        with pytest.raises(ScheduleError, match="time zone"):
            Schedule.cloudstack("DAILY", "30:02", name)
    assert Schedule.cloudstack("DAILY", "30:02", "Asia/Kolkata").next_run(
        at("2024-05-01 00:00")
    ) == at("2024-05-01 21:00")  # 02:30 IST is 21:00 UTC the day before


def test_times_must_be_aware():
    schedule = Schedule.cloudstack("DAILY", "30:02")
    with pytest.raises(ScheduleError, match="after must be an aware datetime"):
        schedule.next_run(datetime(2024, 5, 1))
    with pytest.raises(ScheduleError, match="end must be an aware datetime"):
        schedule.runs_between(at("2024-05-01 00:00"), datetime(2024, 5, 2))


def test_next_run_is_given_in_utc_whatever_the_zone_of_after():
    schedule = Schedule.cloudstack("DAILY", "30:02", "Europe/Berlin")

    run = schedule.next_run(datetime(2024, 5, 1, 9, 0, tzinfo=NEW_YORK))

    assert run.tzinfo is UTC
    assert local(run, BERLIN) == "2024-05-02 02:30 CEST"


def test_runs_between_is_start_exclusive_end_inclusive_and_can_be_limited():
    schedule = Schedule.cloudstack("DAILY", "30:02")

    runs = schedule.runs_between(at("2024-05-01 02:30"), at("2024-05-04 02:30"))

    assert runs == (at("2024-05-02 02:30"), at("2024-05-03 02:30"), at("2024-05-04 02:30"))
    assert schedule.runs_between(at("2024-05-01 00:00"), at("2024-06-01 00:00"), limit=2) == (
        at("2024-05-01 02:30"),
        at("2024-05-02 02:30"),
    )
    assert schedule.runs_between(at("2024-05-04 00:00"), at("2024-05-01 00:00")) == ()
    assert schedule.runs_between(at("2024-05-01 03:00"), at("2024-05-02 02:00")) == ()


# -- DST: Europe/Berlin switches 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC) and
# 2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC).


def test_berlin_daily_in_the_spring_gap_runs_shifted_by_the_gap():
    # 02:30 does not exist on 2024-03-31: the run is at 03:30 CEST, not lost, not doubled.
    schedule = Schedule.cloudstack("DAILY", "30:02", "Europe/Berlin")

    runs = schedule.runs_between(at("2024-03-29 12:00"), at("2024-04-01 12:00"))

    assert [local(r, BERLIN) for r in runs] == [
        "2024-03-30 02:30 CET",
        "2024-03-31 03:30 CEST",
        "2024-04-01 02:30 CEST",
    ]


def test_berlin_daily_in_the_autumn_overlap_runs_once_at_the_first_occurrence():
    schedule = Schedule.cloudstack("DAILY", "30:02", "Europe/Berlin")

    runs = schedule.runs_between(at("2024-10-26 12:00"), at("2024-10-28 12:00"))

    assert [local(r, BERLIN) for r in runs] == ["2024-10-27 02:30 CEST", "2024-10-28 02:30 CET"]
    assert runs[0] == at("2024-10-27 00:30")


def test_berlin_hourly_runs_every_real_hour_through_both_changes():
    schedule = Schedule.cloudstack("HOURLY", "30", "Europe/Berlin")

    spring = schedule.runs_between(at("2024-03-30 23:00"), at("2024-03-31 03:00"))
    autumn = schedule.runs_between(at("2024-10-26 23:00"), at("2024-10-27 03:00"))

    # Spring: 02:30 did not exist, so it is skipped, and the runs stay one hour apart.
    assert [local(r, BERLIN) for r in spring] == [
        "2024-03-31 00:30 CET",
        "2024-03-31 01:30 CET",
        "2024-03-31 03:30 CEST",
        "2024-03-31 04:30 CEST",
    ]
    # Autumn: 02:30 happened twice, an hour apart; both are real hours, both run.
    assert [local(r, BERLIN) for r in autumn] == [
        "2024-10-27 01:30 CEST",
        "2024-10-27 02:30 CEST",
        "2024-10-27 02:30 CET",
        "2024-10-27 03:30 CET",
    ]
    for runs in (spring, autumn):
        assert {b - a for a, b in pairwise(runs)} == {timedelta(hours=1)}


def test_berlin_weekly_on_the_sunday_of_the_change():
    # Both changes fall on a Sunday (DD 1): 02:30 that night is shifted or taken once.
    schedule = Schedule.cloudstack("WEEKLY", "30:02:1", "Europe/Berlin")

    assert local(schedule.next_run(at("2024-03-28 00:00")), BERLIN) == "2024-03-31 03:30 CEST"
    assert local(schedule.next_run(at("2024-10-24 00:00")), BERLIN) == "2024-10-27 02:30 CEST"
    assert local(schedule.next_run(at("2024-10-27 00:30")), BERLIN) == "2024-11-03 02:30 CET"


# -- DST: America/New_York switches 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC) and
# 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC).


def test_new_york_daily_in_the_spring_gap_runs_shifted_by_the_gap():
    schedule = Schedule.cloudstack("DAILY", "30:02", "America/New_York")

    runs = schedule.runs_between(at("2024-03-09 00:00"), at("2024-03-11 12:00"))

    assert [local(r, NEW_YORK) for r in runs] == [
        "2024-03-09 02:30 EST",
        "2024-03-10 03:30 EDT",
        "2024-03-11 02:30 EDT",
    ]
    assert runs[1] == at("2024-03-10 07:30")


def test_new_york_daily_in_the_autumn_overlap_runs_once():
    schedule = Schedule.cloudstack("DAILY", "30:01", "America/New_York")

    runs = schedule.runs_between(at("2024-11-02 12:00"), at("2024-11-04 12:00"))

    assert [local(r, NEW_YORK) for r in runs] == ["2024-11-03 01:30 EDT", "2024-11-04 01:30 EST"]
    assert runs[0] == at("2024-11-03 05:30")


def test_new_york_hourly_across_the_autumn_overlap_runs_both_01_30s():
    schedule = Schedule.cloudstack("HOURLY", "30", "America/New_York")

    runs = schedule.runs_between(at("2024-11-03 04:00"), at("2024-11-03 08:00"))

    assert [local(r, NEW_YORK) for r in runs] == [
        "2024-11-03 00:30 EDT",
        "2024-11-03 01:30 EDT",
        "2024-11-03 01:30 EST",
        "2024-11-03 02:30 EST",
    ]


def test_a_time_outside_the_changes_is_untouched_on_the_day_of_the_change():
    schedule = Schedule.cloudstack("DAILY", "30:01", "Europe/Berlin")

    assert local(schedule.next_run(at("2024-03-30 12:00")), BERLIN) == "2024-03-31 01:30 CET"
    assert local(schedule.next_run(at("2024-03-31 12:00")), BERLIN) == "2024-04-01 01:30 CEST"


def test_describe_names_the_interval_the_time_and_the_zone():
    assert Schedule.cloudstack("HOURLY", "5").describe() == "hourly at minute 05 UTC (HOURLY 5)"
    assert (
        Schedule.cloudstack("MONTHLY", "00:01:28", "Europe/Berlin").describe()
        == "monthly on day 28 at 01:00 Europe/Berlin (MONTHLY 00:01:28)"
    )
