"""The coordinator's timing. Seconds everywhere; deadlines are monotonic."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class GroupConfig:
    # The longest hold an agent grants (its [agent] group_hold_max): a group whose deadline is
    # further away asks for this much.
    max_hold: float = 30.0
    # Thawing and removing a failed group's snapshots happen after the group's deadline has
    # perhaps passed: they get this long of their own.
    cleanup_timeout: float = 300.0
    # Each ThawGroup call (it is retried on transient failures within cleanup_timeout).
    thaw_timeout: float = 30.0
    backoff_base: float = 0.5  # after a transient failure: base * 2^(n-1) seconds ...
    backoff_max: float = 5.0  # ... up to this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"GroupConfig.{f.name} must be a finite number above 0")

    def backoff(self, failures: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, failures - 1)))
