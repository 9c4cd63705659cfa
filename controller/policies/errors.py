"""The policies' errors: each says what was wrong, with the offending value."""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy, or a part of one, is not valid."""


class ScheduleError(PolicyError):
    """A schedule (CloudStack's interval form, a cron expression or a time zone) is not valid."""


class RetentionError(PolicyError):
    """A retention setting is not valid (maxsnaps below 1, above CloudStack's cap, ...)."""


class SelectionError(PolicyError):
    """A selector is not valid, or cannot be applied with what is known."""
