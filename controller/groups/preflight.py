"""The checks before a group freezes anything, against CloudStack's inventory: each member a
known VM, Running on a host that is Up and Enabled, none of its volumes busy. The per-VM
checks are the dispatcher's (controller/dispatch/preflight.py), asked as for a snapshot job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from controller.dispatch.preflight import RUNNING_STATES, Skip, check
from controller.groups.errors import GroupRefused
from controller.groups.model import GroupMember
from controller.inventory import InventorySnapshot, VirtualMachine
from controller.store import Job, JobKind, JobState


def check_members(members: Sequence[GroupMember], inventory: InventorySnapshot) -> None:
    """Raises GroupRefused naming every member that may not be frozen now."""
    reasons = []
    for member in members:
        vm = _vm(member, inventory)
        if vm is None:
            reasons.append(f"{member.domain}: not a VM in CloudStack's inventory")
            continue
        if vm.state not in RUNNING_STATES:
            reasons.append(f"{member.domain}: VM {vm.name} is {vm.state}; a group member must run")
            continue
        found = check(_as_snapshot_job(vm), inventory, healthy=lambda host_id: True)
        if isinstance(found, Skip):
            reasons.append(f"{member.domain}: {found.reason}")
    if reasons:
        raise GroupRefused(reasons)


def _vm(member: GroupMember, inventory: InventorySnapshot) -> VirtualMachine | None:
    if member.vm_id is not None:
        vm = inventory.vms.get(member.vm_id)
        return vm if vm is not None and vm.instance_name == member.domain else None
    return inventory.vm_by_instance_name(member.domain)


def _as_snapshot_job(vm: VirtualMachine) -> Job:
    """The dispatcher checks jobs: this one stands for the member's snapshot of all its
    volumes (never stored or sent)."""
    now = datetime.now(UTC)
    return Job(
        id=f"group member {vm.instance_name}",
        run_id=None,
        kind=JobKind.SNAPSHOT,
        host_id=vm.host_id or "",
        vm_id=vm.id,
        volume_id=None,
        params=MappingProxyType({}),
        idempotency_key="",
        state=JobState.PENDING,
        agent_job_id=None,
        epoch=None,
        attempts=0,
        max_attempts=1,
        not_before=now,
        deadline=now,
        error=None,
        created_at=now,
        updated_at=now,
    )
