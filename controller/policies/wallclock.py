"""Local wall-clock times to instants, with daylight-saving transitions handled on purpose.

A schedule names wall-clock times in its time zone. Twice a year some of them do not map to
exactly one instant:

- In a gap (spring forward: 02:30 does not exist in Europe/Berlin on the last Sunday of March)
  a *fixed-time* run is taken at the wall time shifted forward by the gap (02:30 -> 03:30), so
  a daily snapshot is not lost. This is what CloudStack's lenient `Calendar` does for its
  snapshot policies and what cron does with fixed-time jobs. A *repeating* run (every hour)
  is skipped: that hour did not exist, and the next hour's run follows one real hour later.
- In an overlap (fall back: 02:30 happens twice on the last Sunday of October) a fixed-time
  run is taken once, at the first occurrence. A repeating run is taken at both, since both
  are real hours. (CloudStack's `Calendar` resolves an ambiguous wall time to the second,
  standard-time occurrence: for a fixed-time policy hostsnap runs one hour earlier than
  CloudStack would on that one night, and never twice.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def instants(wall: datetime, tz: ZoneInfo, *, repeating: bool) -> tuple[datetime, ...]:
    """The UTC instants at which the naive wall-clock time `wall` in `tz` is run."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if _shows(first, tz, wall) and _shows(second, tz, wall):  # an overlap: it happens twice
        return (first, second) if repeating else (min(first, second),)
    # A gap: no instant shows this wall time. PEP 495 maps it both before and after the
    # transition; the later of the two is the wall time shifted forward by the gap.
    return () if repeating else (max(first, second),)


def _shows(instant: datetime, tz: ZoneInfo, wall: datetime) -> bool:
    return instant.astimezone(tz).replace(tzinfo=None) == wall
