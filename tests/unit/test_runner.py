"""Policy runs from the store's policies and CloudStack's inventory (the simulator): which
jobs a due policy gets, their intents, that starting again adds nothing, when a run ends and
which runs count as the last scheduled one."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.cloudstack import CloudStackClient, CloudStackConfig
from controller.inventory import Inventory, InventorySnapshot
from controller.policies import Policy, Schedule, Selector
from controller.runner import PolicyRunner
from controller.store import JobState, RunState, Store, schema
from tests.cloudstack_sim import CloudStackSimulator


@pytest.fixture(scope="module")
def inventory() -> InventorySnapshot:
    with CloudStackSimulator() as sim:
        client = CloudStackClient(CloudStackConfig(sim.url, sim.api_key, sim.secret_key))
        return asyncio.run(Inventory(client).refresh())


@pytest.fixture
def db(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        yield store


def vm_id(inventory: InventorySnapshot, name: str) -> str:
    return next(vm.id for vm in inventory.vms.values() if vm.name == name)


def daily(db: Store, *vms: str, name: str = "nightly") -> str:
    schedule = Schedule.cloudstack("DAILY", "30:02")
    return db.policies.create(Policy(f"p-{name}", name, schedule, 3, Selector(vms=vms))).id


def test_a_due_policy_gets_one_job_per_selected_volume_with_intents_for_file_volumes(db, inventory):
    web, alice_db = vm_id(inventory, "web-1"), vm_id(inventory, "db-1")
    policy_id = daily(db, web, alice_db)
    created = db.policies.get(policy_id).created_at
    runner = PolicyRunner(db)

    plan = runner.plan(inventory, created + timedelta(days=2))
    (started,) = runner.start_due(plan, inventory)

    assert started.run.scheduled_for == plan.policies[0].slot
    by_vm = {job.vm_id: job for job in started.jobs}
    assert set(by_vm) == {web, alice_db}  # each VM's busy data disk is left out ...
    for job in started.jobs:  # ... so each job names the one volume it snapshots
        volume = inventory.volumes[job.volume_id or ""]
        assert volume.type == "ROOT"
        assert job.params["name"].startswith(f"policy-{policy_id}-")
        assert job.idempotency_key == f"hostsnap-run/{started.run.id}/{volume.id}"
    web_intents = db.intents.of_job(by_vm[web].id)  # web-1's root is on NFS: its path moves
    assert [(i.volume_id, i.previous_path) for i in web_intents] == [
        (by_vm[web].volume_id, "0b6a7c8e-web1-root")
    ]
    assert db.intents.of_job(by_vm[alice_db].id) == []  # RBD: the image stays the active one

    again = runner.start_due(runner.plan(inventory, created + timedelta(days=2)), inventory)
    assert [j.id for j in again[0].jobs] == [j.id for j in started.jobs]
    assert len(db.jobs.find()) == 2


def test_a_run_ends_once_its_jobs_have_and_then_counts_as_the_last_run(db, inventory):
    policy_id = daily(db, vm_id(inventory, "web-1"))
    created = db.policies.get(policy_id).created_at
    runner = PolicyRunner(db)
    (started,) = runner.start_due(runner.plan(inventory, created + timedelta(days=2)), inventory)
    lease = db.leases.acquire("controller", "test", duration=60)
    assert lease is not None

    assert runner.finish_ended(lease) == []  # its job has not ended
    (job,) = started.jobs
    db.jobs.claim(lease, job.id)
    db.jobs.finish(lease, job.id, JobState.FAILED, "agent said no")
    (ended,) = runner.finish_ended(lease)

    assert (ended.id, ended.state) == (started.run.id, RunState.FAILED)
    assert "agent said no" in (ended.error or "")
    later = runner.plan(inventory, started.run.scheduled_for + timedelta(hours=1))
    assert not later.policies[0].due  # the slot was run
    assert runner.plan(inventory, started.run.scheduled_for + timedelta(days=1)).policies[0].due


def test_a_manual_run_is_not_a_schedule_slot_and_does_not_count_as_the_last_run(db, inventory):
    policy_id = daily(db, vm_id(inventory, "web-1"))
    runner = PolicyRunner(db)
    created = db.policies.get(policy_id).created_at
    (planned,) = runner.plan(inventory, created).policies
    manual = runner.start(planned, created + timedelta(days=2, minutes=7), inventory)
    lease = db.leases.acquire("controller", "test", duration=60)
    assert lease is not None
    for job in manual.jobs:
        db.jobs.claim(lease, job.id)
        db.jobs.finish(lease, job.id, JobState.SUCCEEDED)
    (ended,) = runner.finish_ended(lease)
    assert ended.state is RunState.SUCCEEDED

    assert runner.last_runs(runner.stored_policies()[0]) == {policy_id: created}


def test_a_stored_policy_that_no_longer_reads_is_not_planned_and_the_others_are(db, inventory):
    web = vm_id(inventory, "web-1")
    daily(db, web, name="broken")
    good_id = daily(db, web)
    with db.engine.begin() as conn:  # a time zone this system's tzdata no longer has
        conn.execute(
            sa.update(schema.policies)
            .where(schema.policies.c.name == "broken")
            .values(timezone="Asia/Nowhere")
        )
    runner = PolicyRunner(db)
    created = db.policies.get(good_id).created_at

    chosen, problems = runner.stored_policies()
    plan = runner.plan(inventory, created + timedelta(days=2))

    assert [p.name for p in chosen] == ["nightly"]
    assert len(problems) == 1 and problems[0].startswith("policy broken: unknown time zone")
    assert [p.policy_name for p in plan.policies] == ["nightly"]
    assert [r.vm_name for r in plan.policies[0].runs] == ["web-1"]
