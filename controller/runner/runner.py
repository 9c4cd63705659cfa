"""Runs of policies: a due policy gets a run for its schedule slot and one snapshot job per
VM (per volume when only some of a VM's volumes are selected), each with the intents of the
file volumes whose active image the snapshot moves. Creating them again is harmless (the
run is one per slot, jobs one per idempotency key), so a pass interrupted half-way is
completed by the next one. A run ends once its jobs have."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller import policies, store
from controller.inventory import InventorySnapshot

log = logging.getLogger(__name__)

# Runs of a policy looked at to find the last scheduled one.
RECENT_RUNS = 50


@dataclass(frozen=True)
class StartedRun:
    run: store.Run
    policy_name: str
    jobs: tuple[store.Job, ...]


def snapshot_prefix(policy_id: str) -> str:
    return f"policy-{policy_id}-"


def snapshot_name(policy_id: str, slot: datetime) -> str:
    """What the agent names the snapshots of a run (letters, digits and dashes only); the
    prefix is how retention finds them."""
    return f"{snapshot_prefix(policy_id)}{slot:%Y%m%dT%H%M%SZ}"


def run_state_of(jobs: Sequence[store.Job]) -> store.RunState | None:
    """How a run ended, or None while a job of it has not."""
    if not jobs or not all(j.state.final for j in jobs):
        return None
    succeeded = sum(j.state is store.JobState.SUCCEEDED for j in jobs)
    if succeeded == len(jobs):
        return store.RunState.SUCCEEDED
    return store.RunState.PARTIAL if succeeded else store.RunState.FAILED


class PolicyRunner:
    def __init__(self, db: store.Store, *, job_timeout: float = 3600.0) -> None:
        self._store = db
        self._job_timeout = job_timeout

    def stored_policies(self) -> tuple[list[policies.Policy], list[str]]:
        """The stored policies as the planner takes them, and why any cannot be planned."""
        planned, problems = [], []
        for stored in self._store.policies.all():
            try:
                planned.append(stored.usable())
            except policies.PolicyError as e:
                problems.append(f"policy {stored.name}: {e}")
        return planned, problems

    def last_runs(self, chosen: Sequence[policies.Policy]) -> dict[str, datetime]:
        """Per policy: its latest finished scheduled run, else its creation time (so times
        passed since then count). Manual runs (`run POLICY`) are not schedule slots and do
        not count; a run still RUNNING is planned again, which completes it if its creation
        was interrupted."""
        last = {}
        for policy in chosen:
            last[policy.id] = self._store.policies.get(policy.id).created_at
            for run in self._store.runs.of_policy(policy.id, limit=RECENT_RUNS):
                if run.state is not store.RunState.RUNNING and _is_slot(policy, run.scheduled_for):
                    last[policy.id] = run.scheduled_for
                    break
        return last

    def plan(
        self,
        inventory: InventorySnapshot,
        now: datetime,
        facts: policies.ResourceFacts | None = None,
        caps: policies.RetentionCaps | None = None,
    ) -> policies.Plan:
        chosen, _ = self.stored_policies()
        last_runs = self.last_runs(chosen)
        return policies.plan(chosen, inventory, now, facts=facts, last_runs=last_runs, caps=caps)

    def start_due(self, plan: policies.Plan, inventory: InventorySnapshot) -> list[StartedRun]:
        started = []
        for due in plan.due:
            if due.problems:
                continue
            assert due.slot is not None
            started.append(self.start(due, due.slot, inventory))
        return started

    def start(
        self, planned: policies.PolicyPlan, slot: datetime, inventory: InventorySnapshot
    ) -> StartedRun:
        """The run of `planned` for `slot` and its jobs, made if not there yet."""
        run = self._store.runs.open(planned.policy_id, slot)
        jobs = []
        for vm_run in planned.runs:
            for spec in self._job_specs(planned, vm_run, run.id, slot, inventory):
                jobs.append(self._store.jobs.create(spec))
        log.info(
            "policy %s: run %s for %s with %d jobs", planned.policy_name, run.id, slot, len(jobs)
        )
        return StartedRun(run, planned.policy_name, tuple(jobs))

    def finish_ended(self, lease: store.Lease) -> list[store.Run]:
        """Ends the RUNNING runs whose jobs have all ended."""
        ended = []
        for run in self._store.runs.find(state=store.RunState.RUNNING):
            jobs = self._store.jobs.find(run_id=run.id)
            state = run_state_of(jobs)
            if state is None:
                continue
            failed = [f"{j.id}: {j.error}" for j in jobs if j.state is not store.JobState.SUCCEEDED]
            error = "; ".join(failed) or None
            ended.append(self._store.runs.finish(lease, run.id, state, error))
            log.info("run %s ended %s", run.id, state)
        return ended

    def _job_specs(
        self,
        planned: policies.PolicyPlan,
        vm_run: policies.VmRun,
        run_id: str,
        slot: datetime,
        inventory: InventorySnapshot,
    ) -> list[store.JobSpec]:
        params = {"quiesce": planned.quiesce.value, "name": snapshot_name(planned.policy_id, slot)}
        inventory_volumes = inventory.volumes_of(vm_run.vm_id)
        chosen = [inventory.volumes[v.volume_id] for v in vm_run.volumes]
        whole_vm = {v.id for v in chosen} == {v.id for v in inventory_volumes}
        groups = [(None, chosen)] if whole_vm else [(v.id, [v]) for v in chosen]
        specs = []
        for volume_id, volumes in groups:
            intents = tuple(
                store.IntentSpec(v.id, v.path) for v in volumes if inventory.on_file_pool(v)
            )
            specs.append(
                store.JobSpec(
                    store.JobKind.SNAPSHOT,
                    vm_run.host_id,
                    vm_id=vm_run.vm_id,
                    volume_id=volume_id,
                    params=params,
                    run_id=run_id,
                    idempotency_key=f"hostsnap-run/{run_id}/{volume_id or vm_run.vm_id}",
                    timeout=self._job_timeout,
                    intents=intents,
                )
            )
        return specs


def _is_slot(policy: policies.Policy, when: datetime) -> bool:
    return when in policy.schedule.runs_between(when - timedelta(seconds=1), when)
