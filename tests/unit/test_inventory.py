"""The inventory read from the CloudStack simulator over real HTTP: what it holds, busy volumes,
refresh on demand and on an interval, and a failed refresh that keeps the last inventory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cloudstack import CloudStackApiError
from controller.inventory import Inventory, InventorySnapshot, InventoryUnavailable
from hostsnap_lab.paths import RBD_POOL, LabPaths
from tests.cloudstack_sim import CloudStackSimulator, Host, Zone
from tests.cloudstack_sim.lab import point_at_lab
from tests.unit.cloudstack_support import client_for, run


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        yield simulator


def refreshed(sim: CloudStackSimulator, **options: object) -> InventorySnapshot:
    return run(lambda: Inventory(client_for(sim), **options).refresh())


def test_refresh_reads_hosts_with_their_state_and_resource_state(sim):
    inventory = refreshed(sim)

    hosts = {h.name: h for h in inventory.hosts.values()}
    assert sorted(hosts) == ["kvm-1", "kvm-2", "kvm-3"]  # not the system VM's host record
    assert (hosts["kvm-3"].state, hosts["kvm-3"].resource_state) == ("Up", "Maintenance")
    assert [name for name, h in sorted(hosts.items()) if h.usable] == ["kvm-1", "kvm-2"]
    assert hosts["kvm-1"].ip_address == "10.0.0.11"


def test_refresh_reads_vms_of_every_account_with_their_host_and_state(sim):
    inventory = refreshed(sim)

    vms = {vm.name: vm for vm in inventory.vms.values()}
    assert sorted(vms) == ["batch-1", "db-1", "web-1"]  # db-1 is alice's: listall=true
    web = vms["web-1"]
    assert (web.state, web.host_name) == ("Running", "kvm-1")
    assert inventory.hosts[web.host_id].name == "kvm-1"
    assert web.instance_name.startswith("i-2-") and web.instance_name.endswith("-VM")
    assert (vms["batch-1"].state, vms["batch-1"].host_id) == ("Stopped", None)
    assert inventory.vms_on(web.host_id) == (web,)


def test_refresh_reads_volumes_with_pool_path_state_and_chain_info(sim):
    inventory = refreshed(sim)

    web = next(vm for vm in inventory.vms.values() if vm.name == "web-1")
    root, data = inventory.volumes_of(web.id)
    assert (root.type, root.device_id, root.state, root.path) == (
        "ROOT",
        0,
        "Ready",
        "0b6a7c8e-web1-root",
    )
    assert inventory.pools[root.pool_id].type == "NetworkFilesystem"
    assert inventory.pools[root.pool_id].is_file
    assert (data.type, data.state) == ("DATADISK", "Snapshotting")
    assert inventory.pools[data.pool_id].is_rbd
    assert root.chain_info is None
    spare = next(v for v in inventory.volumes.values() if v.name == "spare-1")
    assert spare.vm_id is None


def test_busy_volumes_are_those_cloudstack_is_working_on(sim):
    inventory = refreshed(sim)

    busy = {(v.name, v.state) for v in inventory.busy_volumes()}
    assert busy == {("DATA-10-1", "Snapshotting"), ("DATA-11-1", "Migrating")}
    assert not any(v.busy for v in inventory.volumes.values() if v.state == "Ready")


def test_a_refresh_on_demand_sees_what_changed_in_cloudstack(sim):
    async def scenario() -> tuple[InventorySnapshot, InventorySnapshot]:
        client = client_for(sim)
        inventory = Inventory(client)
        before = await inventory.refresh()
        busy = next(v for v in before.busy_volumes() if v.state == "Snapshotting")
        await client.update_volume(busy.id, state="Ready", path="data.hostsnap-1", chain_info="c1")
        return before, await inventory.refresh()

    sim.jobs.pending_polls = 0
    before, after = run(scenario)

    changed = next(v for v in after.volumes.values() if v.name == "DATA-10-1")
    assert (changed.state, changed.busy, changed.path, changed.chain_info) == (
        "Ready",
        False,
        "data.hostsnap-1",
        "c1",
    )
    assert before.volumes[changed.id].busy  # the earlier inventory never changes


def test_a_failed_refresh_keeps_the_last_inventory_and_says_so(sim, caplog):
    async def scenario() -> None:
        inventory = Inventory(client_for(sim))
        good = await inventory.refresh()
        sim.fail_next(530, command="listVolumes")

        with pytest.raises(CloudStackApiError):
            await inventory.refresh()

        assert inventory.snapshot is good
        status = inventory.status
        assert status.stale
        assert "errorcode 530" in (status.last_error or "")
        assert (status.consecutive_failures, status.fetched_at) == (1, good.fetched_at)

        fresh = await inventory.refresh()
        assert inventory.snapshot is fresh
        assert not inventory.status.stale

    with caplog.at_level(logging.WARNING, logger="controller.inventory"):
        run(scenario)

    assert any("keeping the inventory" in r.getMessage() for r in caplog.records)


def test_there_is_no_inventory_until_a_refresh_succeeds(sim):
    async def scenario() -> None:
        inventory = Inventory(client_for(sim))
        sim.fail_next(503, command="listHosts")
        with pytest.raises(CloudStackApiError):
            await inventory.refresh()
        with pytest.raises(InventoryUnavailable, match="503"):
            _ = inventory.snapshot

    run(scenario)


def test_callers_asking_during_a_refresh_share_it(sim):
    async def scenario() -> tuple[InventorySnapshot, InventorySnapshot]:
        inventory = Inventory(client_for(sim))
        first, second = await asyncio.gather(inventory.refresh(), inventory.refresh())
        return first, second

    first, second = run(scenario)

    assert first is second
    assert len(sim.calls("listZones")) == 1


def test_run_refreshes_on_its_interval_through_failures(sim):
    sleeps: list[float] = []
    stop = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            stop.set()

    async def scenario() -> Inventory:
        inventory = Inventory(client_for(sim), interval=30.0, sleep=sleep)
        sim.fail_next(530, command="listHosts")  # the first refresh fails
        await inventory.run(stop)
        return inventory

    inventory = run(scenario)

    assert sleeps == [30.0, 30.0, 30.0]
    assert len(sim.calls("listZones")) == 3
    assert not inventory.status.stale
    assert len(inventory.snapshot.hosts) == 3


def test_a_zone_scoped_inventory_holds_only_that_zone(sim):
    other = sim.world.add(Zone("zone-2"))
    sim.world.add(Host("kvm-9", other, "10.9.0.1"))

    inventory = refreshed(sim, zone_id=other.id)

    assert [z.name for z in inventory.zones.values()] == ["zone-2"]
    assert [h.name for h in inventory.hosts.values()] == ["kvm-9"]
    assert inventory.vms == {}


def test_vms_pointed_at_the_lab_carry_its_domain_names_and_disk_paths(sim, tmp_path: Path):
    paths = LabPaths(tmp_path / "lab")
    point_at_lab(sim, paths, host_name="lab-host", host_ip="127.0.0.1")

    inventory = refreshed(sim)

    qcow2 = inventory.vm_by_instance_name("lab-qcow2")
    rbd = inventory.vm_by_instance_name("lab-rbd")
    assert qcow2 is not None and rbd is not None
    assert (qcow2.state, qcow2.host_name, rbd.host_name) == ("Running", "lab-host", "lab-host")
    assert inventory.hosts[qcow2.host_id].usable
    (disk,) = inventory.volumes_of(qcow2.id)
    pool = inventory.pools[disk.pool_id]
    assert Path(pool.path) / (disk.path or "") == paths.qcow2_disk
    assert pool.is_file
    (image,) = inventory.volumes_of(rbd.id)
    assert (inventory.pools[image.pool_id].path, image.path) == (RBD_POOL, "lab-rbd")
    assert inventory.pools[image.pool_id].is_rbd


def test_the_inventory_asks_vms_and_hosts_for_their_minimal_details_only(sim):
    inventory = refreshed(sim)

    for command in ("listVirtualMachines", "listHosts"):
        assert {c.params.get("details") for c in sim.calls(command)} == {"min"}, command
    web = next(vm for vm in inventory.vms.values() if vm.name == "web-1")
    assert web.instance_name and inventory.hosts[web.host_id or ""].ip_address == "10.0.0.11"
    assert all(h.hypervisor == "KVM" and h.zone_id for h in inventory.hosts.values())


def test_details_min_leaves_out_what_other_details_add_and_unknown_details_are_431(sim):
    client = client_for(sim)

    full = run(lambda: client.list_all("listVirtualMachines", {"listall": "true"}))
    small = run(
        lambda: client.list_all("listVirtualMachines", {"listall": "true", "details": "min"})
    )
    with pytest.raises(CloudStackApiError) as refused:
        run(lambda: client.list_all("listHosts", {"details": "everything"}))

    assert all("templateid" in vm for vm in full)
    assert not any("templateid" in vm or "nic" in vm for vm in small)
    assert all("instancename" in vm for vm in small)
    assert refused.value.errorcode == 431
    assert "The details parameter contains a non permitted value" in refused.value.errortext
