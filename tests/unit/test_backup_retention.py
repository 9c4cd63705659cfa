"""A policy's backups kept keep_backups per volume: a backup goes only when no kept backup
needs it and nothing not the policy's builds on it, by subtree; the next backup starts a new
chain once the volume's chain is as long as the policy keeps. Decisions, then the jobs made
once after a run and sent to a fake agent speaking the real proto."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controller import policies
from controller.agents import AgentBackup
from controller.dispatch import Result
from controller.runner.backup_retention import backup_retention_jobs, needs_full, to_delete
from controller.store import JobKind, JobSpec
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.unit.dispatch_support import FAST, DispatchZone

OURS = "policy-p1-20261204T023000Z"


def backup(id: str, parent: str = "", name: str = OURS) -> AgentBackup:
    return AgentBackup(id, "i-web-1/vda", f"s-{id}", name, parent)


def ids(found: list[AgentBackup]) -> list[str]:
    return [b.id for b in found]


def test_a_chain_goes_whole_once_the_kept_backups_need_none_of_it():
    chain = [backup("f1"), backup("i1", "f1"), backup("f2"), backup("i2", "f2")]
    assert ids(to_delete(chain, "p1", keep=2)) == ["f1"]  # with i1, its descendant
    assert ids(to_delete(chain, "p1", keep=3)) == []  # i1 is kept, and needs f1
    assert ids(to_delete(chain[:2], "p1", keep=1)) == []  # the kept i1 needs f1


def test_what_is_not_the_policys_and_what_it_builds_on_stay():
    manual = backup("m1", "i1", name="before-upgrade")
    other = backup("o1", name="policy-p2-20261204T023000Z")
    chain = [backup("f1"), backup("i1", "f1"), manual, other, backup("f2"), backup("i2", "f2")]
    assert ids(to_delete(chain, "p1", keep=2)) == []


def test_the_next_backup_is_full_once_the_chain_is_as_long_as_kept():
    chain = [backup("f1"), backup("i1", "f1")]
    assert not needs_full([], keep=2)
    assert not needs_full(chain[:1], keep=2)
    assert needs_full(chain, keep=2)
    assert not needs_full([*chain, backup("f2")], keep=2)


def test_after_a_run_the_old_chain_is_deleted_once_through_the_agent(tmp_path: Path):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1",), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            db = zone.store
            policy = db.policies.create(
                policies.Policy(
                    "p1",
                    "nightly",
                    policies.Schedule.cloudstack("DAILY", "30:02"),
                    2,
                    policies.Selector(vms=("web-1",)),
                    backup_target="secondary",
                    keep_backups=2,
                )
            ).usable()
            agent = zone.agents["kvm-1"]
            agent.backups["secondary"] = [
                pb.Backup(id=b.id, volume=b.volume, snapshot_name=b.snapshot_name,
                          parent_id=b.parent_id)
                for b in (backup("f1"), backup("i1", "f1"), backup("f2"), backup("i2", "f2"))
            ]  # fmt: skip
            run = db.runs.open(policy.id, db.policies.get(policy.id).created_at)
            made = db.jobs.create(
                JobSpec(JobKind.BACKUP, "kvm-1", vm_id="web-1", run_id=run.id,
                        params={"snapshot_id": "s-i2", "target": "secondary"})
            )  # fmt: skip
            await zone.settle()
            assert db.jobs.get(made.id).state.value == "succeeded"

            inventory = await zone.inventory.refresh()
            assert zone.pool is not None
            (delete,) = await backup_retention_jobs(db, zone.pool, inventory, policy, run)
            again = await backup_retention_jobs(db, zone.pool, inventory, policy, run)

            assert [j.id for j in again] == [delete.id]
            assert (delete.kind, dict(delete.params)) == (
                JobKind.BACKUP_DELETE,
                {"backup_id": "f1", "target": "secondary", "with_descendants": "true"},
            )
            outcomes = await zone.settle()
            assert [o.result for o in outcomes if o.job_id == delete.id] == [Result.SUCCEEDED]
            left = [b.id for b in agent.backups["secondary"]]
            assert left[:2] == ["f2", "i2"] and "f1" not in left and "i1" not in left

    asyncio.run(test())
