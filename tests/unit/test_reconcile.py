"""Keeping CloudStack in line with the hosts, against the CloudStack simulator (real HTTP) and
a fake agent (real gRPC): a snapshot job's result applied through its intents, tags written
and replaced, and the reconcile pass that fixes only what it can justify and only when asked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.agents import AgentJob, AgentPool
from controller.cloudstack import NO_RETRY, CloudStackClient, CloudStackConfig
from controller.inventory import Inventory, InventorySnapshot
from controller.reconcile import (
    CONSISTENCY,
    LAST_SNAPSHOT,
    ApplyOutcome,
    ReconcileReport,
    VolumeStatus,
    apply_snapshot,
    reconcile,
)
from controller.store import IntentSpec, IntentState, Job, JobKind, JobSpec, JobState, Store
from hostsnap.agent.v1 import agent_pb2 as pb
from tests.cloudstack_sim import CloudStackSimulator, Disk, Host, Pool, World, Zone, add_vm
from tests.cloudstack_sim.world import Snapshot
from tests.grpc_fake_agent import FakeAgent, FakeAgentServer

OLD = timedelta(hours=2)


class Lab:
    """One zone: host kvm-1 (its fake agent), an NFS and a Ceph pool, VM web-1 with its root
    disk on NFS (vda) and a data disk on Ceph (vdb), a store holding the leader's lease."""

    def __init__(self, tmp_path: Path) -> None:
        self.sim = CloudStackSimulator(seeded=False)
        world: World = self.sim.world
        zone = world.add(Zone("zone-1"))
        self.host = world.add(Host("kvm-1", zone, "127.0.0.1"))
        self.nfs = world.add(
            Pool("nfs-primary", zone, "NetworkFilesystem", "/export/primary", "10.0.0.5")
        )
        self.ceph = world.add(Pool("ceph-primary", zone, "RBD", "rbd", "10.0.0.6", "ZONE"))
        self.vm = add_vm(
            world,
            name="web-1",
            zone=zone,
            host=self.host,
            disks=[Disk(self.nfs, "root-0b6a"), Disk(self.ceph, "data-5d1e")],
        )
        self.root = world.named(world.volumes, "ROOT-10")
        self.data = world.named(world.volumes, "DATA-10-1")
        self.mount = f"/mnt/{self.nfs.id}"
        self.agent = FakeAgent("kvm-1")
        self.agent_disks(f"{self.mount}/root-0b6a", "rbd/data-5d1e")
        self.servers = FakeAgentServer()
        self.store = Store.open(f"sqlite:///{tmp_path / 'controller.db'}")
        lease = self.store.leases.acquire("controller", "test", duration=120)
        assert lease is not None
        self.lease = lease
        self.sim.jobs.pending_polls = 0
        self.client: CloudStackClient  # once the simulator listens
        self.agents: AgentPool

    def agent_disks(self, vda: str, vdb: str) -> None:
        self.agent.volumes[self.vm.instance_name] = [("vda", vda), ("vdb", vdb)]

    async def __aenter__(self) -> Lab:
        self.sim.start()
        self.client = CloudStackClient(
            CloudStackConfig(
                self.sim.url,
                self.sim.api_key,
                self.sim.secret_key,
                job_poll_interval=0.01,
                job_poll_max_interval=0.02,
            ),
            retry=NO_RETRY,
        )
        endpoint = await self.servers.start(self.agent)
        self.agents = AgentPool(lambda host: endpoint, None, call_timeout=2.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.agents.close()
        await self.servers.stop()
        self.sim.stop()
        self.store.close()

    async def inventory(self) -> InventorySnapshot:
        return await Inventory(self.client).refresh()

    def job(self, *volumes: Any) -> Job:
        intents = tuple(IntentSpec(v.id, v.path) for v in volumes)
        job = self.store.jobs.create(
            JobSpec(JobKind.SNAPSHOT, self.host.id, vm_id=self.vm.id, intents=intents)
        )
        claimed = self.store.jobs.claim(self.lease, job.id)
        assert claimed is not None
        self.store.jobs.mark_running(self.lease, job.id, uuid.uuid4().hex)
        return self.store.jobs.finish(self.lease, job.id, JobState.SUCCEEDED)

    async def apply(self, job: Job, agent_job: AgentJob, **options: Any) -> Any:
        inventory = await self.inventory()
        return await apply_snapshot(
            self.store, self.lease, self.client, inventory, job, agent_job, **options
        )

    async def reconcile(self, **options: Any) -> ReconcileReport:
        inventory = await self.inventory()
        lease = self.lease if options.get("fix") else None
        return await reconcile(self.store, lease, self.client, inventory, self.agents, **options)

    def tags(self, volume: Any) -> dict[str, str]:
        found = [t for t in self.sim.world.tags if t.resource_id == volume.id]
        assert len({t.key for t in found}) == len(found), "one value per key"
        return {t.key: t.value for t in found}

    def states(self, job: Job) -> dict[str, IntentState]:
        return {i.volume_id: i.state for i in self.store.intents.of_job(job.id)}


def in_lab(tmp_path: Path, test: Callable[[Lab], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Lab(tmp_path) as lab:
            await test(lab)

    asyncio.run(main())


def snapshot_result(
    domain: str, disks: list[tuple[str, int, str, str]], consistency: int = 1
) -> AgentJob:
    """An agent's succeeded snapshot job: disks as (target, kind, content, active image)."""
    job = pb.Job(
        id=uuid.uuid4().hex,
        operation="snapshot",
        state=pb.JOB_STATE_SUCCEEDED,
        domain=domain,
        snapshot=pb.SnapshotResult(
            consistency=consistency,
            disks=[
                pb.DiskSnapshot(
                    target=t, kind=k, snapshot_id=uuid.uuid4().hex, content=c, active_image=a
                )
                for t, k, c, a in disks
            ],
        ),
    )
    return AgentJob.from_proto(job)


def both_disks(lab: Lab, overlay: str, consistency: int = 1) -> AgentJob:
    return snapshot_result(
        lab.vm.instance_name,
        [
            ("vda", pb.VOLUME_KIND_FILE, f"{lab.mount}/{lab.root.path}", f"{lab.mount}/{overlay}"),
            ("vdb", pb.VOLUME_KIND_RBD, "rbd/data-5d1e@snap", "rbd/data-5d1e"),
        ],
        consistency,
    )


def overlay_name(original: str = "root-0b6a") -> str:
    return f"{original}.hostsnap-{uuid.uuid4().hex}"


def test_agent_job_carries_each_disks_result_and_the_consistency():
    job = snapshot_result("d", [("vda", pb.VOLUME_KIND_FILE, "/p/v", "/p/v.hostsnap-x")], 2)
    assert job.consistency == "crash"
    assert job.snapshot_ids == (job.disks[0].snapshot_id,)
    disk = job.disk("vda")
    assert disk is not None and (disk.kind, disk.content, disk.active_image) == (
        "file",
        "/p/v",
        "/p/v.hostsnap-x",
    )


def test_apply_after_a_snapshot_records_the_new_image_in_cloudstack_and_abandons_rbd(tmp_path):
    async def test(lab: Lab) -> None:
        job = lab.job(lab.root, lab.data)
        overlay = overlay_name()
        result = await lab.apply(job, both_disks(lab, overlay))

        assert result.ok, result.errors
        outcomes = {v.volume_id: v.outcome for v in result.volumes}
        assert outcomes == {lab.root.id: ApplyOutcome.APPLIED, lab.data.id: ApplyOutcome.ABANDONED}
        assert lab.root.path == overlay  # as CloudStack now records it
        assert lab.data.path == "data-5d1e"  # RBD: the image stays the active one
        assert lab.states(job) == {
            lab.root.id: IntentState.APPLIED,
            lab.data.id: IntentState.ABANDONED,
        }
        intents = {i.volume_id: i for i in lab.store.intents.of_job(job.id)}
        assert intents[lab.root.id].new_path == overlay
        assert "RBD" in (intents[lab.data.id].error or "")
        for volume in (lab.root, lab.data):
            tags = lab.tags(volume)
            assert tags[CONSISTENCY] == "application"
            assert datetime.strptime(tags[LAST_SNAPSHOT], "%Y-%m-%dT%H:%M:%SZ")

    in_lab(tmp_path, test)


def test_tags_are_replaced_on_the_next_snapshot(tmp_path):
    async def test(lab: Lab) -> None:
        first = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        await lab.apply(lab.job(lab.root), both_disks(lab, overlay_name()), now=lambda: first)
        assert lab.tags(lab.root) == {
            LAST_SNAPSHOT: "2026-01-02T03:04:05Z",
            CONSISTENCY: "application",
        }
        second, overlay = first + timedelta(hours=1), overlay_name()
        result = await lab.apply(
            lab.job(lab.root), both_disks(lab, overlay, consistency=2), now=lambda: second
        )
        assert result.ok, result.errors
        assert lab.root.path == overlay  # an overlay of the original, made on the last one
        assert lab.tags(lab.root) == {LAST_SNAPSHOT: "2026-01-02T04:04:05Z", CONSISTENCY: "crash"}

    in_lab(tmp_path, test)


def test_a_failed_update_leaves_the_intent_changed_and_reconcile_with_fix_applies_it(tmp_path):
    async def test(lab: Lab) -> None:
        job = lab.job(lab.root)
        overlay = overlay_name()
        lab.sim.fail_next_job(530, "database went away")  # the updateVolume job
        result = await lab.apply(job, both_disks(lab, overlay))

        assert not result.ok
        (root,) = [v for v in result.volumes if v.volume_id == lab.root.id]
        assert root.outcome is ApplyOutcome.UPDATE_FAILED
        assert "database went away" in root.detail
        assert lab.root.path == "root-0b6a"
        assert lab.states(job) == {lab.root.id: IntentState.CHANGED}
        assert lab.tags(lab.root)[CONSISTENCY] == "application"  # the snapshot was taken

        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")
        report = await lab.reconcile(fix=True, intents_after=0.0)

        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.FIXED
        assert rows[lab.data.id].status is VolumeStatus.IN_LINE
        assert lab.root.path == overlay
        assert lab.states(job) == {lab.root.id: IntentState.APPLIED}
        assert [i.action for i in report.intents] == ["applied"]

    in_lab(tmp_path, test)


def test_a_stale_path_is_reported_without_fix_and_fixed_only_with_it(tmp_path):
    async def test(lab: Lab) -> None:
        overlay = overlay_name()
        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")

        report = await lab.reconcile(fix=False)
        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.STALE
        assert rows[lab.root.id].expected_path == overlay
        assert lab.root.path == "root-0b6a" and not lab.sim.calls("updateVolume")
        assert not report.clean

        report = await lab.reconcile(fix=True)
        assert [r.volume_id for r in report.fixed] == [lab.root.id]
        assert lab.root.path == overlay
        assert len(lab.sim.calls("updateVolume")) == 1

        again = await lab.reconcile(fix=True)
        assert {r.status for r in again.volumes} == {VolumeStatus.IN_LINE}
        assert again.clean and len(lab.sim.calls("updateVolume")) == 1

    in_lab(tmp_path, test)


def test_an_unexplained_difference_is_flagged_and_never_fixed(tmp_path):
    async def test(lab: Lab) -> None:
        lab.agent_disks(f"{lab.mount}/someone-elses-image.qcow2", "rbd/other-image")

        report = await lab.reconcile(fix=True)

        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.DIFFERS
        assert rows[lab.data.id].status is VolumeStatus.DIFFERS
        assert "neither the recorded" in rows[lab.root.id].detail
        assert (lab.root.path, lab.data.path) == ("root-0b6a", "data-5d1e")
        assert not lab.sim.calls("updateVolume")
        assert any("differs" in line for line in report.problems())

    in_lab(tmp_path, test)


def test_a_path_outside_the_pool_is_refused_and_nothing_is_written(tmp_path):
    async def test(lab: Lab) -> None:
        job = lab.job(lab.root)
        outside = snapshot_result(
            lab.vm.instance_name,
            [("vda", pb.VOLUME_KIND_FILE, f"{lab.mount}/root-0b6a", f"/var/tmp/{overlay_name()}")],
        )
        result = await lab.apply(job, outside)

        (root,) = [v for v in result.volumes if v.volume_id == lab.root.id]
        assert root.outcome is ApplyOutcome.REFUSED and "outside pool" in root.detail
        assert not result.ok
        assert lab.states(job) == {lab.root.id: IntentState.RECORDED}
        assert lab.root.path == "root-0b6a" and not lab.sim.calls("updateVolume")

        lab.agent_disks(f"/var/tmp/{overlay_name()}", "rbd/data-5d1e")
        report = await lab.reconcile(fix=True, intents_after=0.0)
        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.DIFFERS
        assert [i.action for i in report.intents] == ["flagged"]
        assert lab.states(job) == {lab.root.id: IntentState.RECORDED}

    in_lab(tmp_path, test)


def test_an_unreachable_agent_and_a_missing_disk_are_reported(tmp_path):
    async def test(lab: Lab) -> None:
        lab.agent.volumes[lab.vm.instance_name] = [("vda", f"{lab.mount}/root-0b6a")]
        report = await lab.reconcile()
        statuses = {r.volume_id: r.status for r in report.volumes}
        assert statuses == {lab.root.id: VolumeStatus.IN_LINE, lab.data.id: VolumeStatus.NO_DISK}

        lab.agent.down = True
        report = await lab.reconcile()
        assert {r.status for r in report.volumes} == {VolumeStatus.UNREACHABLE}

    in_lab(tmp_path, test)


def test_a_stale_path_with_a_job_in_flight_is_left_alone(tmp_path):
    async def test(lab: Lab) -> None:
        lab.store.jobs.create(
            JobSpec(
                JobKind.SNAPSHOT,
                lab.host.id,
                vm_id=lab.vm.id,
                intents=(IntentSpec(lab.root.id, lab.root.path),),
            )
        )
        lab.agent_disks(f"{lab.mount}/{overlay_name()}", "rbd/data-5d1e")
        report = await lab.reconcile(fix=True)
        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.BUSY
        assert not lab.sim.calls("updateVolume")

    in_lab(tmp_path, test)


def test_stuck_transitional_snapshots_are_reported_with_what_the_agent_lists(tmp_path):
    async def test(lab: Lab) -> None:
        now = datetime.now(UTC)
        world = lab.sim.world
        stuck = world.add(Snapshot("stuck", lab.root, state="BackingUp", created=now - OLD))
        world.add(Snapshot("young", lab.root, state="Creating", created=now))
        world.add(Snapshot("done", lab.data, state="BackedUp", created=now - OLD))
        taken = pb.Snapshot(
            id="c" * 32, name="nightly", target="vda", consistency=pb.CONSISTENCY_CRASH
        )
        taken.created_at.FromDatetime((now - OLD).replace(tzinfo=None))
        lab.agent.snapshots[lab.vm.instance_name] = [
            pb.VolumeSnapshots(
                volume=pb.Volume(target="vda", location=f"{lab.mount}/root-0b6a"),
                snapshots=[taken],
            ),
            pb.VolumeSnapshots(volume=pb.Volume(target="vdb", location="rbd/data-5d1e")),
        ]

        report = await lab.reconcile(transitional_after=3600.0)

        assert [t.snapshot_id for t in report.transitional] == [stuck.id]
        (found,) = report.transitional
        assert (found.state, found.target, found.vm_name) == ("BackingUp", "vda", "web-1")
        assert [(s.id, s.consistency) for s in found.agent_snapshots] == [("c" * 32, "crash")]
        assert found.age_seconds >= 3600
        as_json = report.to_dict()
        assert as_json["transitional_snapshots"][0]["agent_snapshots"][0]["name"] == "nightly"
        assert report.table()[0][0] == "volume_name"

        everything = await lab.reconcile(transitional_after=0.0)
        assert {t.name for t in everything.transitional} == {"stuck", "young"}

    in_lab(tmp_path, test)


def test_a_stale_path_is_not_fixed_when_the_disk_moved_during_the_pass(tmp_path):
    async def main() -> None:
        lab = Lab(tmp_path)
        seen, moved = f"root-0b6a.hostsnap-{'1' * 32}", f"root-0b6a.hostsnap-{'2' * 32}"
        lab.agent_disks(f"{lab.mount}/{seen}", "rbd/data-5d1e")
        listed = lab.agent.ListVolumes

        async def then_a_snapshot_moves_the_disk(request: Any, context: Any) -> Any:
            answer = await listed(request, context)
            lab.agent_disks(f"{lab.mount}/{moved}", "rbd/data-5d1e")
            return answer

        lab.agent.ListVolumes = then_a_snapshot_moves_the_disk  # type: ignore[method-assign]
        async with lab:
            report = await lab.reconcile(fix=True)

        rows = {r.volume_id: r for r in report.volumes}
        assert rows[lab.root.id].status is VolumeStatus.BUSY
        assert "changed during the pass" in rows[lab.root.id].detail
        assert lab.root.path == "root-0b6a" and not lab.sim.calls("updateVolume")

    asyncio.run(main())


def test_created_on_primary_and_copying_are_transitional_and_destroyed_is_never_seen(tmp_path):
    async def test(lab: Lab) -> None:
        old = datetime.now(UTC) - OLD
        world = lab.sim.world
        for name, state in [("primary", "CreatedOnPrimary"), ("copy", "Copying"),
                            ("gone", "Destroyed"), ("failed", "Error")]:  # fmt: skip
            world.add(Snapshot(name, lab.root, state=state, created=old))

        report = await lab.reconcile(transitional_after=3600.0)

        assert {(t.name, t.state) for t in report.transitional} == {
            ("primary", "CreatedOnPrimary"),
            ("copy", "Copying"),
        }

    in_lab(tmp_path, test)
