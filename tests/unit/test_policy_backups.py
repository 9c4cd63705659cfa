"""A policy that backs its snapshots up: once the agent's snapshot job succeeded, one backup
job per disk snapshot (made once, however often it is asked for), sent to the agent that
took the snapshot; the snapshot's CloudStack-style state follows its jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import policies, store
from controller.agents import AgentJob, AgentJobState
from controller.agents.jobs import SnapshotDisk
from controller.dispatch import Result
from controller.runner.backups import backups_of
from controller.runner.snapshot_states import SnapshotState, snapshot_states
from controller.store import JobKind, JobState
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.unit.dispatch_support import FAST, DispatchZone


def policy(**backups: object) -> policies.Policy:
    return policies.Policy(
        "p-nightly",
        "nightly",
        policies.Schedule.cloudstack("DAILY", "30:02"),
        2,
        policies.Selector(vms=("web-1",)),
        **backups,  # type: ignore[arg-type]
    )


def agent_job(*snapshot_ids: str) -> AgentJob:
    disks = tuple(
        SnapshotDisk(f"vd{chr(97 + i)}", "rbd", sid, f"rbd/d{i}@hostsnap-{sid}", f"rbd/d{i}")
        for i, sid in enumerate(snapshot_ids)
    )
    return AgentJob("a-1", "snapshot", AgentJobState.SUCCEEDED, "i-web-1", "k", disks=disks)


def test_backup_options_are_checked_stored_and_read_back(tmp_path: Path):
    with pytest.raises(policies.PolicyError, match="backup target"):
        policy(backup_target="../secondary")
    with pytest.raises(policies.RetentionError, match="keep-backups needs a backup target"):
        policy(keep_backups=3)
    db = store.Store.open(f"sqlite:///{tmp_path / 'controller.db'}")
    try:
        stored = db.policies.create(policy(backup_target="secondary", keep_backups=7))
        assert (stored.backup_target, stored.keep_backups) == ("secondary", 7)
        assert db.policies.get(stored.id).usable() == policy(
            backup_target="secondary", keep_backups=7
        )
    finally:
        db.close()


def test_a_snapshot_of_a_backing_up_policy_is_backed_up_once_and_becomes_backed_up(
    tmp_path: Path,
):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1",), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            db = zone.store
            stored = db.policies.create(policy(backup_target="secondary"))
            run = db.runs.open(stored.id, stored.created_at)
            taken = zone.job("web-1", run_id=run.id, params={"name": "policy-p-nightly-x"})
            (done,) = await zone.settle()
            assert done.result is Result.SUCCEEDED
            taken = db.jobs.get(taken.id)
            assert [s.state for s in snapshot_states(db.jobs.find())] == [
                SnapshotState.CREATED_ON_PRIMARY
            ]

            agent = zone.client("kvm-1")
            made = await backups_of(db, taken, agent_job("s1", "s2"), "kvm-1", agent)
            again = await backups_of(db, taken, agent_job("s1", "s2"), "kvm-1", agent)  # replay

            assert [j.id for j in again] == [j.id for j in made] and len(made) == 2
            assert {(j.kind, j.run_id, j.params["target"]) for j in made} == {
                (JobKind.BACKUP, run.id, "secondary")
            }
            assert [s.state for s in snapshot_states(db.jobs.find())] == [SnapshotState.BACKING_UP]
            outcomes = await zone.settle()
            assert [o.result for o in outcomes] == [Result.SUCCEEDED] * 2
            assert sorted(zone.agents["kvm-1"].backed_up) == [
                ("s1", "secondary"),
                ("s2", "secondary"),
            ]
            (state,) = snapshot_states(db.jobs.find())
            assert (state.state, state.backup_target) == (SnapshotState.BACKED_UP, "secondary")

    asyncio.run(test())


def test_a_policy_without_a_target_or_a_job_of_no_policy_makes_no_backup(tmp_path: Path):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1",), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            db = zone.store
            stored = db.policies.create(policy())
            run = db.runs.open(stored.id, stored.created_at)
            in_run = zone.job("web-1", run_id=run.id)
            manual = zone.job("web-1")
            agent = zone.client("kvm-1")
            assert await backups_of(db, in_run, agent_job("s1"), "kvm-1", agent) == []
            assert await backups_of(db, manual, agent_job("s2"), "kvm-1", agent) == []

    asyncio.run(test())


def job(kind: JobKind, state: JobState, **params: str) -> store.Job:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    return store.Job(
        id=params.pop("id", "j"), run_id="r", kind=kind, host_id="kvm-1", vm_id="vm",
        volume_id=None, params=params, idempotency_key=params.get("key", "k"), state=state,
        agent_job_id=None, epoch=None, attempts=0, max_attempts=3, not_before=now,
        deadline=now, error="agent job a: RESOURCE_EXHAUSTED" if state is JobState.FAILED
        else None, created_at=now, updated_at=now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("snapshot", "backups", "expected"),
    [
        (JobState.RUNNING, [], SnapshotState.CREATING),
        (JobState.FAILED, [], SnapshotState.ERROR),
        (JobState.SUCCEEDED, [], SnapshotState.CREATED_ON_PRIMARY),
        (JobState.SUCCEEDED, [JobState.SUCCEEDED, JobState.PENDING], SnapshotState.BACKING_UP),
        (JobState.SUCCEEDED, [JobState.SUCCEEDED, JobState.SUCCEEDED], SnapshotState.BACKED_UP),
        (JobState.SUCCEEDED, [JobState.RUNNING, JobState.FAILED], SnapshotState.ERROR),
    ],
)
def test_the_state_of_a_snapshot_follows_its_jobs(
    snapshot: JobState, backups: list[JobState], expected: SnapshotState
):
    jobs = [job(JobKind.SNAPSHOT, snapshot, id="s")] + [
        job(JobKind.BACKUP, state, id=f"b{i}", snapshot_job="s", target="nfs")
        for i, state in enumerate(backups)
    ]
    (found,) = snapshot_states(jobs)
    assert found.state is expected
    assert ("RESOURCE_EXHAUSTED" in found.error) == (JobState.FAILED in [snapshot, *backups])


def test_a_backup_starts_a_new_chain_once_the_volumes_is_as_long_as_kept(tmp_path: Path):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1",), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            db = zone.store
            stored = db.policies.create(policy(backup_target="secondary", keep_backups=2))
            run = db.runs.open(stored.id, stored.created_at)
            taken = zone.job("web-1", run_id=run.id)
            zone.agents["kvm-1"].backups["secondary"] = [
                pb.Backup(id="f1", volume="i-web-1/vda"),
                pb.Backup(id="i1", volume="i-web-1/vda", parent_id="f1"),
                pb.Backup(id="o1", volume="i-web-1/vdb"),
            ]
            made = await backups_of(db, taken, agent_job("s1", "s2"), "kvm-1", zone.client("kvm-1"))
            assert {j.params["disk"]: j.params["full"] for j in made} == {
                "vda": "true",
                "vdb": "false",
            }

    asyncio.run(test())
