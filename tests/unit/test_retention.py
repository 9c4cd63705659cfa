"""Retention after a run, against a fake agent speaking the real proto: the policy's oldest
snapshots beyond maxsnaps get one DELETE job each (never the newest, never another
policy's or a manual one), made once however often retention looks, and the dispatcher sends
them to the agent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from controller import policies
from controller.dispatch import Result
from controller.runner.retention import retention_jobs
from controller.runner.runner import snapshot_name
from controller.store import JobKind, JobState
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.unit.dispatch_support import FAST, DispatchZone

T0 = datetime(2026, 11, 20, 2, 30, tzinfo=UTC)


def ours_at(snapshot_id: str, policy_id: str, days: int) -> pb.Snapshot:
    taken = T0 + timedelta(days=days)
    return snapshot(snapshot_id, snapshot_name(policy_id, taken), taken)


def snapshot(snapshot_id: str, name: str, created: datetime) -> pb.Snapshot:
    stamp = Timestamp()
    stamp.FromDatetime(created)
    return pb.Snapshot(id=snapshot_id, name=name, domain="i-web-1", target="vda", created_at=stamp)


def test_the_oldest_beyond_maxsnaps_are_deleted_once_and_only_this_policys(tmp_path: Path):
    async def test() -> None:
        async with DispatchZone(tmp_path, ("kvm-1",), FAST) as zone:
            zone.inventory.add_vm("web-1", "kvm-1")
            db, lease = zone.store, zone.lease
            assert lease is not None
            policy = db.policies.create(
                policies.Policy(
                    "p-nightly",
                    "nightly",
                    policies.Schedule.cloudstack("DAILY", "30:02"),
                    2,
                    policies.Selector(vms=("web-1",)),
                )
            ).usable()
            ours = [f"{i:032x}" for i in range(1, 4)]  # oldest first
            zone.agents["kvm-1"].snapshots["i-web-1"] = [
                pb.VolumeSnapshots(
                    volume=pb.Volume(
                        domain="i-web-1",
                        target="vda",
                        kind=pb.VOLUME_KIND_FILE,
                        location=f"/mnt/nfs-1/web-1-root.qcow2.hostsnap-{ours[2]}",
                    ),
                    snapshots=[
                        ours_at(ours[2], policy.id, 2),
                        snapshot("f" * 32, "before-upgrade", T0 - timedelta(days=9)),
                        snapshot("e" * 32, snapshot_name("other", T0), T0 - timedelta(days=8)),
                        ours_at(ours[1], policy.id, 1),
                        ours_at(ours[0], policy.id, 0),
                    ],
                )
            ]  # fmt: skip
            run = db.runs.open(policy.id, T0 + timedelta(days=2))
            job = zone.job("web-1", run_id=run.id)
            db.jobs.claim(lease, job.id)
            db.jobs.finish(lease, job.id, JobState.SUCCEEDED)
            inventory = await zone.inventory.refresh()

            caps = policies.RetentionCaps()
            (delete,) = await retention_jobs(db, zone.pool, inventory, policy, run, caps)  # type: ignore[arg-type]
            again = await retention_jobs(db, zone.pool, inventory, policy, run, caps)  # type: ignore[arg-type]

            assert [j.id for j in again] == [delete.id]
            assert (delete.kind, delete.volume_id, dict(delete.params)) == (
                JobKind.DELETE,
                "web-1-root",
                {"snapshot_id": ours[0]},
            )
            (intent,) = db.intents.of_job(delete.id)  # the merge may move a file's active image
            assert intent.previous_path == "web-1-root.qcow2"
            outcomes = await zone.settle()
            assert [o.result for o in outcomes if o.job_id == delete.id] == [Result.SUCCEEDED]
            assert zone.agents["kvm-1"].deleted == [ours[0]]

    asyncio.run(test())
