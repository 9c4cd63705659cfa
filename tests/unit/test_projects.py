"""Resources owned by projects, as CloudStack lists them (AccountManagerImpl
.buildACLSearchParameters, in the simulator's `access`): `listall=true` alone skips them,
`projectid=-1` lists them (and, on newer releases, everything else too). The controller
reads both and sees every VM and volume once, on either kind of release, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.cloudstack.projects import list_everyone, tag_key
from controller.inventory import Inventory
from controller.policies import Policy, Schedule, Selector, TagMatch
from controller.reconcile import CONSISTENCY, ApplyOutcome, VolumeStatus
from controller.runner.facts import read_facts
from tests.cloudstack_sim import CloudStackSimulator, Disk, Project, VirtualMachine, add_vm
from tests.cloudstack_sim.world import Snapshot
from tests.unit.cloudstack_support import client_for, run
from tests.unit.test_reconcile import OLD, Lab, both_disks, in_lab, overlay_name

RELEASES = pytest.mark.parametrize(
    "with_listall", [True, False], ids=["projectid=-1 lists all", "projects only"]
)


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        yield simulator


def project_vm(sim: CloudStackSimulator) -> VirtualMachine:
    """VM etl-1 of project analytics, Running on kvm-1 with a root disk and a data disk."""
    world = sim.world
    project = world.add(Project("analytics"))
    return add_vm(
        world,
        name="etl-1",
        zone=world.named(world.zones, "zone-1"),
        host=world.named(world.hosts, "kvm-1"),
        disks=[
            Disk(world.named(world.pools, "nfs-primary"), "etl1-root"),
            Disk(world.named(world.pools, "ceph-primary"), "etl1-data"),
        ],
        project=project,
    )


def ids(records: list[dict[str, object]]) -> list[object]:
    return sorted(str(r["id"]) for r in records)


def test_listall_alone_skips_project_resources_and_projectid_minus_one_lists_them(sim):
    vm = project_vm(sim)
    client = client_for(sim)

    plain = run(lambda: client.list_all("listVirtualMachines", {"listall": "true"}))
    projects = run(lambda: client.list_all("listVirtualMachines", {"projectid": "-1"}))
    one = run(lambda: client.list_all("listVirtualMachines", {"id": vm.id}))

    assert vm.id not in ids(plain)
    assert ids(projects) == [vm.id]
    assert [(r["project"], r.get("account")) for r in projects] == [("analytics", None)]
    assert ids(one) == [vm.id]  # asked by id, a project's VM is found


@RELEASES
def test_list_everyone_gives_every_vm_and_volume_once(sim, with_listall):
    sim.api.behaviour.projects_with_listall = with_listall
    project_vm(sim)
    client = client_for(sim)

    vms = run(lambda: list_everyone(client, "listVirtualMachines"))
    volumes = run(lambda: list_everyone(client, "listVolumes"))

    assert ids(vms) == sorted(sim.world.vms)
    assert ids(volumes) == sorted(sim.world.volumes)


@RELEASES
def test_the_inventory_holds_a_projects_vms_and_volumes_with_their_paths(sim, with_listall):
    sim.api.behaviour.projects_with_listall = with_listall
    vm = project_vm(sim)

    inventory = run(lambda: Inventory(client_for(sim)).refresh())

    assert inventory.vms[vm.id].instance_name == vm.instance_name
    assert inventory.vms[vm.id].host_id == sim.world.named(sim.world.hosts, "kvm-1").id
    assert [(v.type, v.path) for v in inventory.volumes_of(vm.id)] == [
        ("ROOT", "etl1-root"),
        ("DATADISK", "etl1-data"),
    ]
    assert len(inventory.vms) == len(sim.world.vms)


@RELEASES
def test_tags_of_project_volumes_are_read_for_selection_once(sim, with_listall):
    sim.api.behaviour.projects_with_listall = with_listall
    sim.jobs.pending_polls = 0
    vm = project_vm(sim)
    client = client_for(sim)
    (root,) = [v for v in sim.world.volumes.values() if v.vm is vm and v.type == "ROOT"]
    run(lambda: client.create_tags("Volume", [root.id], {"tier": "gold"}))
    policy = Policy(
        id="p-gold",
        name="gold",
        schedule=Schedule.cloudstack("DAILY", "30:02"),
        max_snaps=1,
        selector=Selector(tags=(TagMatch("tier", "gold"),)),
    )

    tags = run(lambda: list_everyone(client, "listTags", key=tag_key))
    facts = run(lambda: read_facts(client, [policy]))

    assert [(t["resourceid"], t["key"]) for t in tags] == [(root.id, "tier")]
    assert facts is not None and facts.tags_of(root.id) == {"tier": "gold"}


@RELEASES
def test_a_project_vms_snapshot_is_applied_tagged_and_reconciled(tmp_path: Path, with_listall):
    async def test(lab: Lab) -> None:
        lab.sim.api.behaviour.projects_with_listall = with_listall
        lab.sim.world.move_to_project(lab.vm, Project("analytics"))
        overlay = overlay_name()

        result = await lab.apply(lab.job(lab.root, lab.data), both_disks(lab, overlay))

        assert result.ok, result.errors
        outcomes = {v.volume_id: v.outcome for v in result.volumes}
        assert outcomes == {lab.root.id: ApplyOutcome.APPLIED, lab.data.id: ApplyOutcome.ABANDONED}
        assert lab.root.path == overlay
        assert lab.tags(lab.root)[CONSISTENCY] == "application"
        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")
        stuck = Snapshot("stuck", lab.root, state="BackingUp", created=datetime.now(UTC) - OLD)
        lab.sim.world.add(stuck)
        report = await lab.reconcile(transitional_after=3600.0)
        assert {r.volume_id: r.status for r in report.volumes} == {
            lab.root.id: VolumeStatus.IN_LINE,
            lab.data.id: VolumeStatus.IN_LINE,
        }
        assert [(t.snapshot_id, t.vm_name) for t in report.transitional] == [(stuck.id, "web-1")]

    in_lab(tmp_path, test)


@RELEASES
def test_a_stale_path_of_a_project_volume_is_fixed_after_reading_it_again(tmp_path, with_listall):
    async def test(lab: Lab) -> None:
        lab.sim.api.behaviour.projects_with_listall = with_listall
        lab.sim.world.move_to_project(lab.vm, Project("analytics"))
        overlay = overlay_name()
        lab.agent_disks(f"{lab.mount}/{overlay}", "rbd/data-5d1e")

        report = await lab.reconcile(fix=True)

        assert [r.volume_id for r in report.fixed] == [lab.root.id]
        assert lab.root.path == overlay

    in_lab(tmp_path, test)
