"""Consistency groups: several VMs, on one host or several, snapshotted at one point in time
(freeze all, snapshot all, thaw all within one deadline; any failure thaws all and removes
the snapshots the other members made)."""

from controller.groups.config import GroupConfig
from controller.groups.coordinator import snapshot_group
from controller.groups.errors import GroupInterrupted, GroupRefused
from controller.groups.model import GroupMember, GroupResult, MemberOutcome
from controller.groups.preflight import check_members

__all__ = [
    "GroupConfig",
    "GroupInterrupted",
    "GroupMember",
    "GroupRefused",
    "GroupResult",
    "MemberOutcome",
    "check_members",
    "snapshot_group",
]
