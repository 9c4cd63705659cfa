"""Selection from the inventory of the CloudStack simulator's seed zone: by VM (id, name or
instance name), volume, tag, account and domain; busy volumes, stopped VMs, detached volumes and
hosts that are not Up and Enabled are left out, each with its reasons."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.inventory import (
    Host,
    InventorySnapshot,
    StoragePool,
    VirtualMachine,
    Volume,
    Zone,
)
from controller.inventory.model import by_id
from controller.policies import (
    ResourceFacts,
    Selection,
    SelectionError,
    Selector,
    TagMatch,
    Why,
    select,
)
from tests.cloudstack_sim import Disk, World, add_vm
from tests.cloudstack_sim import VirtualMachine as SimVm
from tests.cloudstack_sim import Volume as SimVolume
from tests.cloudstack_sim.seed import seed
from tests.cloudstack_sim.world import DOMAIN_ID, Tag

FETCHED_AT = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)


def seeded_world() -> World:
    """zone-1: kvm-1, kvm-2 (Up, Enabled), kvm-3 (Maintenance); web-1 on kvm-1 (data disk
    Snapshotting), db-1 of alice on kvm-2 (data disk Migrating), batch-1 Stopped, spare-1
    detached. See tests/cloudstack_sim/seed.py."""
    world = World()
    seed(world)
    return world


def inventory_of(world: World, fetched_at: datetime = FETCHED_AT) -> InventorySnapshot:
    """The inventory a refresh would read from `world`, made from the same API records."""
    with world.lock:
        return InventorySnapshot(
            zones=by_id(Zone.from_api(z.to_api()) for z in world.zones.values()),
            hosts=by_id(
                Host.from_api(h.to_api()) for h in world.hosts.values() if h.type == "Routing"
            ),
            pools=by_id(StoragePool.from_api(p.to_api()) for p in world.pools.values()),
            vms=by_id(VirtualMachine.from_api(vm.to_api()) for vm in world.vms.values()),
            volumes=by_id(Volume.from_api(v.to_api()) for v in world.volumes.values()),
            fetched_at=fetched_at,
        )


def facts_of(world: World) -> ResourceFacts:
    """Tags (as listTags gives them) and owners (from the VM and volume records)."""
    with world.lock:
        owned = [r.to_api() for r in (*world.vms.values(), *world.volumes.values())]
        return ResourceFacts.from_api(tags=[t.to_api() for t in world.tags], owned=owned)


def names(selection: Selection) -> tuple[list[str], list[str]]:
    return (
        [f"{t.volume.name}@{t.host.name}" for t in selection.targets],
        [e.volume.name for e in selection.excluded],
    )


def reasons(selection: Selection, volume_name: str) -> list[Why]:
    exclusion = next(e for e in selection.excluded if e.volume.name == volume_name)
    return [r.why for r in exclusion.reasons]


@pytest.fixture
def world() -> World:
    return seeded_world()


def test_a_vm_by_name_gives_its_ready_disks_and_says_why_a_busy_one_is_left_out(world):
    selection = select(Selector(vms=("web-1",)), inventory_of(world))

    assert names(selection) == (["ROOT-10@kvm-1"], ["DATA-10-1"])
    target = selection.targets[0]
    assert (target.vm.name, target.volume.type, target.volume.device_id) == ("web-1", "ROOT", 0)
    (exclusion,) = selection.excluded
    assert [r.why for r in exclusion.reasons] == [Why.VOLUME_BUSY]
    assert str(exclusion) == (
        "DATA-10-1 of web-1: volume DATA-10-1 is Snapshotting: CloudStack is working on it"
    )
    assert selection.notes == ()


def test_a_vm_is_found_by_id_name_or_instance_name_alike(world):
    inventory = inventory_of(world)
    web = world.named(world.vms, "web-1")

    for ref in (web.id, web.name, web.instance_name):
        assert names(select(Selector(vms=(ref,)), inventory)) == (["ROOT-10@kvm-1"], ["DATA-10-1"])


def test_a_migrating_volume_of_a_vm_on_a_good_host_is_left_out(world):
    selection = select(Selector(vms=("db-1",)), inventory_of(world))

    assert names(selection) == (["ROOT-11@kvm-2"], ["DATA-11-1"])
    assert reasons(selection, "DATA-11-1") == [Why.VOLUME_BUSY]


def test_a_stopped_vm_has_no_host_to_run_on(world):
    selection = select(Selector(vms=("batch-1",)), inventory_of(world))

    assert names(selection) == ([], ["ROOT-12"])
    assert str(selection.excluded[0]) == "ROOT-12 of batch-1: VM batch-1 is Stopped and on no host"


def test_a_detached_volume_has_no_agent_to_take_it(world):
    spare = world.named(world.volumes, "spare-1")

    selection = select(Selector(volumes=(spare.id,)), inventory_of(world))

    assert names(selection) == ([], ["spare-1"])
    assert reasons(selection, "spare-1") == [Why.DETACHED]


def test_a_vm_on_a_host_in_maintenance_is_left_out_with_every_reason(world):
    zone = world.named(world.zones, "zone-1")
    kvm3 = world.named(world.hosts, "kvm-3")
    nfs = world.named(world.pools, "nfs-primary")
    add_vm(
        world,
        name="legacy-1",
        zone=zone,
        host=kvm3,
        disks=[Disk(nfs, "legacy-root"), Disk(nfs, "legacy-data", state="Resizing")],
    )

    selection = select(Selector(vms=("legacy-1",)), inventory_of(world))

    assert names(selection) == ([], ["ROOT-13", "DATA-13-1"])
    assert reasons(selection, "ROOT-13") == [Why.HOST_UNUSABLE]
    assert reasons(selection, "DATA-13-1") == [Why.VOLUME_BUSY, Why.HOST_UNUSABLE]
    assert "host kvm-3 is Up/Maintenance; only Up and Enabled hosts are acted on" in str(
        selection.excluded[0]
    )


def test_a_disconnected_host_and_a_migrating_vm_are_left_out(world):
    world.named(world.hosts, "kvm-2").state = "Disconnected"
    world.named(world.vms, "web-1").state = "Migrating"

    selection = select(Selector(vms=("web-1", "db-1")), inventory_of(world))

    assert names(selection) == ([], ["ROOT-11", "DATA-11-1", "ROOT-10", "DATA-10-1"])
    assert reasons(selection, "ROOT-10") == [Why.VM_STATE]
    assert reasons(selection, "ROOT-11") == [Why.HOST_UNUSABLE]
    assert str(selection.excluded[0]) == (
        "ROOT-11 of db-1: host kvm-2 is Disconnected/Enabled; only Up and Enabled hosts are "
        "acted on"
    )
    assert str(selection.excluded[2]) == "ROOT-10 of web-1: VM web-1 is Migrating, not Running"


def test_a_volume_of_a_vm_the_inventory_does_not_list_is_left_out(world):
    zone = world.named(world.zones, "zone-1")
    router = SimVm("r-4-VM", zone, "r-4-VM", "Running", world.named(world.hosts, "kvm-1"))
    volume = world.add(
        SimVolume("ROOT-4", zone, "ROOT", "Ready", world.named(world.pools, "nfs-primary"), "r4")
    )
    volume.vm, volume.device_id = router, 0  # attached to a VM that listVirtualMachines omits

    selection = select(Selector(volumes=(volume.id,)), inventory_of(world))

    assert reasons(selection, "ROOT-4") == [Why.VM_UNKNOWN]


def test_names_that_match_nothing_or_several_vms_are_noted_not_guessed(world):
    inventory = inventory_of(world)
    web = next(vm for vm in inventory.vms.values() if vm.name == "web-1")
    twin = replace(web, id="twin-id", instance_name="i-2-99-VM", host_id=None, state="Stopped")
    inventory = replace(inventory, vms=by_id([*inventory.vms.values(), twin]))

    selection = select(Selector(vms=("web-1", "nope"), volumes=("no-such-id",)), inventory)

    assert selection.targets == () and selection.excluded == ()
    assert selection.notes == (
        f"2 VMs are named 'web-1' ({', '.join(sorted([web.id, 'twin-id']))}); name one by id",
        "no VM with id or name 'nope'",
        "no volume with id 'no-such-id'",
    )


def test_a_tag_on_a_vm_selects_its_volumes_and_a_tag_on_a_volume_that_volume(world):
    web = world.named(world.vms, "web-1")
    spare = world.named(world.volumes, "spare-1")
    world.tags.append(Tag("backup", "daily", "UserVm", web.id))
    world.tags.append(Tag("backup", "daily", "Volume", spare.id))
    world.tags.append(Tag("backup", "weekly", "UserVm", world.named(world.vms, "db-1").id))

    selection = select(
        Selector(tags=(TagMatch.parse("backup=daily"),)), inventory_of(world), facts_of(world)
    )

    assert names(selection) == (["ROOT-10@kvm-1"], ["spare-1", "DATA-10-1"])
    assert reasons(selection, "spare-1") == [Why.DETACHED]
    monthly = Selector(tags=(TagMatch("backup", "monthly"),))
    assert names(select(monthly, inventory_of(world), facts_of(world))) == ([], [])


def test_any_of_the_tags_selects_as_cloudstacks_tags_filter_does(world):
    world.tags.append(Tag("tier", "gold", "UserVm", world.named(world.vms, "web-1").id))
    world.tags.append(Tag("tier", "silver", "UserVm", world.named(world.vms, "db-1").id))
    selector = Selector(tags=(TagMatch("tier", "gold"), TagMatch("tier", "silver")))

    selection = select(selector, inventory_of(world), facts_of(world))

    assert names(selection) == (["ROOT-11@kvm-2", "ROOT-10@kvm-1"], ["DATA-11-1", "DATA-10-1"])


def test_an_account_selects_what_it_owns(world):
    selection = select(Selector(accounts=("alice",)), inventory_of(world), facts_of(world))

    assert names(selection) == (["ROOT-11@kvm-2"], ["DATA-11-1"])


def test_a_domain_by_id_or_name_selects_everything_in_it(world):
    inventory, facts = inventory_of(world), facts_of(world)

    by_id_ = select(Selector(domains=(DOMAIN_ID,)), inventory, facts)
    by_name = select(Selector(domains=("ROOT",)), inventory, facts)

    assert names(by_id_) == names(by_name)
    assert names(by_id_)[0] == ["ROOT-11@kvm-2", "ROOT-10@kvm-1"]  # db-1 < web-1
    assert sorted(names(by_id_)[1]) == ["DATA-10-1", "DATA-11-1", "ROOT-12", "spare-1"]
    assert select(Selector(domains=("customers",)), inventory, facts).targets == ()


def test_filters_narrow_the_named_vms_and_each_other(world):
    world.tags.append(Tag("backup", "daily", "UserVm", world.named(world.vms, "web-1").id))
    inventory, facts = inventory_of(world), facts_of(world)

    alice_of_two = select(Selector(vms=("web-1", "db-1"), accounts=("alice",)), inventory, facts)
    admin_tagged = select(
        Selector(accounts=("admin",), tags=(TagMatch("backup", "daily"),)), inventory, facts
    )
    alice_tagged = select(
        Selector(accounts=("alice",), tags=(TagMatch("backup", "daily"),)), inventory, facts
    )

    assert names(alice_of_two) == (["ROOT-11@kvm-2"], ["DATA-11-1"])
    assert names(admin_tagged) == (["ROOT-10@kvm-1"], ["DATA-10-1"])
    assert names(alice_tagged) == ([], [])


def test_a_selector_that_needs_facts_not_read_refuses_rather_than_guessing(world):
    inventory = inventory_of(world)

    with pytest.raises(SelectionError, match="filters on tags, but no tags were read"):
        select(Selector(tags=(TagMatch("backup", "daily"),)), inventory)
    with pytest.raises(SelectionError, match="filters on owners, but no owners were read"):
        select(Selector(accounts=("alice",)), inventory, ResourceFacts(tags={}))


def test_bad_selectors_are_refused():
    with pytest.raises(SelectionError, match="needs at least one of vms, volumes, tags"):
        Selector()
    with pytest.raises(SelectionError, match="selector vms: empty value"):
        Selector(vms=(" ",))
    with pytest.raises(SelectionError, match="selector vms: a value is given twice"):
        Selector(vms=("web-1", "db-1", "web-1"))
    with pytest.raises(SelectionError, match="selector tags: a value is given twice"):
        Selector(tags=(TagMatch("backup", "daily"), TagMatch("backup", "daily")))
    with pytest.raises(SelectionError, match="tag ' =daily': needs a key"):
        TagMatch(" ", "daily")
    with pytest.raises(SelectionError, match="tag 'backup': write key=value"):
        TagMatch.parse("backup")
    with pytest.raises(SelectionError, match="write key=value"):
        TagMatch.parse("=daily")
    assert TagMatch.parse(" backup = daily ") == TagMatch("backup", "daily")
    assert str(TagMatch("backup", "daily")) == "backup=daily"


def test_facts_keep_only_vm_and_volume_tags_and_read_owners():
    facts = ResourceFacts.from_api(
        tags=[
            {"resourcetype": "UserVm", "resourceid": "vm-1", "key": "a", "value": "1"},
            {"resourcetype": "Volume", "resourceid": "vol-1", "key": "b", "value": "2"},
            {"resourcetype": "Snapshot", "resourceid": "snap-1", "key": "c", "value": "3"},
        ],
        owned=[{"id": "vm-1", "account": "alice", "domainid": "d-1", "domain": "ROOT"}],
    )

    assert dict(facts.tags_of("vm-1")) == {"a": "1"}
    assert dict(facts.tags_of("vol-1")) == {"b": "2"}
    assert facts.tags_of("snap-1") == {}
    owner = facts.owner_of("vm-1")
    assert owner is not None and (owner.account, owner.domain_id) == ("alice", "d-1")
    assert ResourceFacts.from_api(tags=[]).owners is None


def test_selector_describe_lists_what_it_names():
    selector = Selector(vms=("web-1",), tags=(TagMatch("backup", "daily"),), accounts=("a",))
    assert selector.describe() == "vms=web-1 tags=backup=daily accounts=a"
