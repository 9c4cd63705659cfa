"""The plan: what the policies would run now and next, against one inventory (a dry run).

A pure function of its inputs: the policies, one inventory, the time `now`, the snapshots
the policies already made, the tags and owners, when each policy last ran and CloudStack's
caps. Nothing is called and nothing changes.

Catch-up follows CloudStack's scheduler (SnapshotSchedulerImpl: one pending schedule per
policy, run once its time has passed): a policy whose scheduled times passed since its last
run is due now, once, however many were missed. A policy that has never run is not due before
its next scheduled time; give its creation time as its last run to make times passed since
then count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from controller.inventory import InventorySnapshot
from controller.policies.caps import RetentionCaps
from controller.policies.errors import PolicyError
from controller.policies.facts import ResourceFacts
from controller.policies.policy import Policy, Quiesce
from controller.policies.retention import SnapshotRecord, decide
from controller.policies.selection import Exclusion, Target, select

# Missed times are counted up to this many: `missed` equal to it means this many or more.
MISSED_COUNT_LIMIT = 1000
PLANNED = "(planned)"  # the id of the snapshot a run would take, in retention's reckoning


@dataclass(frozen=True)
class VolumeRun:
    volume_id: str
    volume_name: str
    device_id: int | None
    delete: tuple[str, ...]  # snapshot ids retention deletes once this run's snapshot is BackedUp
    kept: int  # this policy's usable snapshots of the volume after that, the new one included


@dataclass(frozen=True)
class VmRun:
    """One snapshot request to the VM's host agent: the selected disks, frozen once."""

    vm_id: str
    vm_name: str
    instance_name: str  # the libvirt domain
    host_id: str
    host_name: str
    volumes: tuple[VolumeRun, ...]


@dataclass(frozen=True)
class PolicyPlan:
    policy_id: str
    policy_name: str
    schedule: str
    quiesce: Quiesce
    keep: int | None  # effective maxsnaps; None when the policy cannot run
    due: bool  # its time has come: it runs now, unless `problems` say why not
    when: datetime  # now when due, else its next scheduled time (UTC)
    slot: datetime | None  # when due: the (first missed) scheduled time this run stands for
    missed: int  # scheduled times after `slot` that passed too; folded into this one run
    next_run: datetime  # the first scheduled time after now
    runs: tuple[VmRun, ...]
    excluded: tuple[Exclusion, ...]
    notes: tuple[str, ...]  # worth knowing; the policy still runs
    problems: tuple[str, ...]  # why the policy does not run at all


@dataclass(frozen=True)
class Plan:
    now: datetime
    inventory_at: datetime
    policies: tuple[PolicyPlan, ...]  # due ones first, then by time

    @property
    def due(self) -> tuple[PolicyPlan, ...]:
        return tuple(p for p in self.policies if p.due and p.runs)


def plan(
    policies: Iterable[Policy],
    inventory: InventorySnapshot,
    now: datetime,
    *,
    snapshots: Iterable[SnapshotRecord] = (),
    facts: ResourceFacts | None = None,
    last_runs: Mapping[str, datetime] | None = None,
    caps: RetentionCaps | None = None,
) -> Plan:
    existing = tuple(snapshots)
    caps = caps or RetentionCaps()
    last_runs = last_runs or {}
    plans = [
        _plan_one(p, inventory, now, existing, facts, last_runs.get(p.id), caps) for p in policies
    ]
    plans = _note_coinciding(plans)
    plans.sort(key=lambda p: (not p.due, p.when, p.policy_name, p.policy_id))
    return Plan(now=now, inventory_at=inventory.fetched_at, policies=tuple(plans))


def _plan_one(
    policy: Policy,
    inventory: InventorySnapshot,
    now: datetime,
    existing: tuple[SnapshotRecord, ...],
    facts: ResourceFacts | None,
    last_run: datetime | None,
    caps: RetentionCaps,
) -> PolicyPlan:
    schedule = policy.schedule
    next_run = schedule.next_run(now)
    passed: tuple[datetime, ...] = ()
    if last_run is not None:
        passed = schedule.runs_between(last_run, now, limit=MISSED_COUNT_LIMIT + 1)
    due = bool(passed) and policy.enabled
    when = now if due else next_run
    notes: list[str] = []
    problems: list[str] = [] if policy.enabled else ["disabled"]
    keep: int | None = None
    try:
        keep = policy.keep(caps)
    except PolicyError as exc:
        problems.append(str(exc))
    if cap_problem := policy.cap_problem(caps):
        notes.append(cap_problem)
    excluded: tuple[Exclusion, ...] = ()
    runs: tuple[VmRun, ...] = ()
    try:
        selection = select(policy.selector, inventory, facts)
    except PolicyError as exc:
        problems.append(str(exc))
    else:
        excluded = selection.excluded
        notes.extend(selection.notes)
        if not selection.targets:
            notes.append("selects no volume that can be snapshotted now")
        if keep is not None and not problems:
            runs = _runs(selection.targets, policy.id, keep, when, existing)
    return PolicyPlan(
        policy_id=policy.id,
        policy_name=policy.name,
        schedule=schedule.describe(),
        quiesce=policy.quiesce,
        keep=keep,
        due=due,
        when=when,
        slot=passed[0] if due else None,
        missed=len(passed) - 1 if due else 0,
        next_run=next_run,
        runs=runs,
        excluded=excluded,
        notes=tuple(notes),
        problems=tuple(problems),
    )


def _runs(
    targets: tuple[Target, ...],
    policy_id: str,
    keep: int,
    when: datetime,
    existing: tuple[SnapshotRecord, ...],
) -> tuple[VmRun, ...]:
    by_vm: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_vm[target.vm.id].append(target)
    runs = []
    for group in by_vm.values():
        vm, host = group[0].vm, group[0].host
        volumes = tuple(_volume_run(t, policy_id, keep, when, existing) for t in group)
        runs.append(VmRun(vm.id, vm.name, vm.instance_name, host.id, host.name, volumes))
    return tuple(runs)


def _volume_run(
    target: Target,
    policy_id: str,
    keep: int,
    when: datetime,
    existing: tuple[SnapshotRecord, ...],
) -> VolumeRun:
    volume = target.volume
    planned = SnapshotRecord(PLANNED, volume.id, when, "BackedUp", policy_id)
    decision = decide((*existing, planned), volume_id=volume.id, policy_id=policy_id, keep=keep)
    return VolumeRun(
        volume_id=volume.id,
        volume_name=volume.name,
        device_id=volume.device_id,
        delete=tuple(s.id for s in decision.delete if s is not planned),
        kept=len(decision.kept),
    )


def _note_coinciding(plans: list[PolicyPlan]) -> list[PolicyPlan]:
    """Policies due at the same time on the same VM: the agent takes one snapshot of a domain
    at a time, so they run one after the other (CloudStack merges such policies into one)."""
    on_vm: dict[str, list[PolicyPlan]] = defaultdict(list)
    for p in plans:
        if p.due:
            for run in p.runs:
                on_vm[run.vm_id].append(p)
    result = []
    for p in plans:
        others = sorted(
            {o.policy_name for run in p.runs for o in on_vm.get(run.vm_id, []) if o is not p}
        )
        if p.due and others:
            p = replace(p, notes=(*p.notes, f"also due on the same VMs: {', '.join(others)}"))
        result.append(p)
    return result
