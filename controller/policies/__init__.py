"""Snapshot policies as pure logic: schedules (CloudStack's interval form and cron, in IANA
time zones), retention (maxsnaps under CloudStack's caps), selection from the inventory and
the plan of what would run. Nothing here calls out or keeps state; `now` is always given."""

from controller.policies.caps import RetentionCaps
from controller.policies.errors import (
    PolicyError,
    RetentionError,
    ScheduleError,
    SelectionError,
)
from controller.policies.facts import Owner, ResourceFacts
from controller.policies.interval import IntervalType
from controller.policies.plan import Plan, PolicyPlan, VmRun, VolumeRun, plan
from controller.policies.policy import Policy, Quiesce
from controller.policies.retention import (
    POLICY_TAG,
    RetentionDecision,
    SnapshotRecord,
    decide,
)
from controller.policies.schedule import Schedule, ScheduleKind
from controller.policies.selection import (
    Exclusion,
    Reason,
    Selection,
    Selector,
    TagMatch,
    Target,
    Why,
    select,
)

__all__ = [
    "POLICY_TAG",
    "Exclusion",
    "IntervalType",
    "Owner",
    "Plan",
    "Policy",
    "PolicyError",
    "PolicyPlan",
    "Quiesce",
    "Reason",
    "ResourceFacts",
    "RetentionCaps",
    "RetentionDecision",
    "RetentionError",
    "Schedule",
    "ScheduleError",
    "ScheduleKind",
    "Selection",
    "SelectionError",
    "Selector",
    "SnapshotRecord",
    "TagMatch",
    "Target",
    "VmRun",
    "VolumeRun",
    "Why",
    "decide",
    "plan",
    "select",
]
