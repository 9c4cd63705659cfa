"""Selection: the volumes a policy snapshots, read from the inventory, and why others are left
out.

Scope: the volumes of the VMs in `vms` (ids, names or instance names) and the volumes in
`volumes` (ids); every volume of the inventory when neither is given. Filters then narrow
the scope: `tags` (key=value on the volume or on its VM), `accounts` (owner's account name)
and `domains` (owner's domain id or name). A filter matches when any of its values matches
(as the `tags` filter of CloudStack's list APIs does); every filter given must match. An
empty selector is refused: a policy never snapshots a whole zone by accident.

A selected volume is a target only when CloudStack is not working on it and hostsnap has
somewhere to run: the volume is Ready, attached to a Running VM, on an Up and Enabled host.
Every other selected volume is reported with each reason it is left out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.inventory import Host, InventorySnapshot, VirtualMachine, Volume
from controller.policies.errors import SelectionError
from controller.policies.facts import ResourceFacts


@dataclass(frozen=True)
class TagMatch:
    key: str
    value: str

    def __post_init__(self) -> None:
        if not self.key.strip():
            raise SelectionError(f"tag {str(self)!r}: needs a key")

    @classmethod
    def parse(cls, text: str) -> TagMatch:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise SelectionError(f"tag {text!r}: write key=value")
        return cls(key.strip(), value.strip())

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class Selector:
    vms: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    tags: tuple[TagMatch, ...] = ()
    accounts: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.vms or self.volumes or self.tags or self.accounts or self.domains):
            raise SelectionError(
                "a selector needs at least one of vms, volumes, tags, accounts or domains"
            )
        for name in ("vms", "volumes", "accounts", "domains"):
            if any(not str(value).strip() for value in getattr(self, name)):
                raise SelectionError(f"selector {name}: empty value")
        for name in ("vms", "volumes", "tags", "accounts", "domains"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise SelectionError(f"selector {name}: a value is given twice")

    def describe(self) -> str:
        parts = [
            f"{name}={','.join(str(v) for v in values)}"
            for name, values in (
                ("vms", self.vms),
                ("volumes", self.volumes),
                ("tags", self.tags),
                ("accounts", self.accounts),
                ("domains", self.domains),
            )
            if values
        ]
        return " ".join(parts)


class Why(enum.StrEnum):
    VOLUME_BUSY = "volume-busy"  # CloudStack is working on it (Snapshotting, Migrating, ...)
    VOLUME_NOT_READY = "volume-not-ready"  # Allocated, Uploaded, Destroy, ...
    DETACHED = "detached"  # on no VM: no domain for an agent to snapshot
    VM_UNKNOWN = "vm-unknown"  # not among the inventory's VMs (a system VM, another zone)
    VM_ON_NO_HOST = "vm-on-no-host"  # Stopped: CloudStack clears its host
    VM_STATE = "vm-state"  # Starting, Stopping, Migrating, ...
    HOST_UNKNOWN = "host-unknown"
    HOST_UNUSABLE = "host-unusable"  # not Up and Enabled (Maintenance, Disconnected, ...)


@dataclass(frozen=True)
class Reason:
    why: Why
    detail: str


@dataclass(frozen=True)
class Target:
    volume: Volume
    vm: VirtualMachine
    host: Host


@dataclass(frozen=True)
class Exclusion:
    volume: Volume
    vm: VirtualMachine | None
    reasons: tuple[Reason, ...]

    def __str__(self) -> str:
        on = f" of {self.vm.name}" if self.vm else ""
        return f"{self.volume.name}{on}: " + "; ".join(r.detail for r in self.reasons)


@dataclass(frozen=True)
class Selection:
    targets: tuple[Target, ...]
    excluded: tuple[Exclusion, ...]
    notes: tuple[str, ...]  # selector values that matched nothing, or more than one VM


def select(
    selector: Selector, inventory: InventorySnapshot, facts: ResourceFacts | None = None
) -> Selection:
    facts = facts or ResourceFacts()
    if selector.tags and facts.tags is None:
        raise SelectionError("the selector filters on tags, but no tags were read")
    if (selector.accounts or selector.domains) and facts.owners is None:
        raise SelectionError("the selector filters on owners, but no owners were read")
    notes: list[str] = []
    scope = _scope(selector, inventory, notes)
    chosen = [v for v in scope if _passes(selector, v, facts)]
    targets: list[Target] = []
    excluded: list[Exclusion] = []
    for volume in sorted(chosen, key=lambda v: _order(v, inventory)):
        vm = inventory.vms.get(volume.vm_id) if volume.vm_id else None
        reasons = _volume_reasons(volume) + _placement_reasons(volume, vm, inventory)
        if reasons:
            excluded.append(Exclusion(volume, vm, reasons))
        elif vm is not None and vm.host_id is not None:  # what no reasons means
            targets.append(Target(volume, vm, inventory.hosts[vm.host_id]))
    return Selection(tuple(targets), tuple(excluded), tuple(notes))


def _scope(selector: Selector, inventory: InventorySnapshot, notes: list[str]) -> list[Volume]:
    if not (selector.vms or selector.volumes):
        return list(inventory.volumes.values())
    scope: dict[str, Volume] = {}
    for ref in selector.vms:
        vms = inventory.find_vms(ref)
        if not vms:
            notes.append(f"no VM with id or name {ref!r}")
        elif len(vms) > 1:
            ids = ", ".join(sorted(vm.id for vm in vms))
            notes.append(f"{len(vms)} VMs are named {ref!r} ({ids}); name one by id")
        else:
            scope.update((v.id, v) for v in inventory.volumes_of(vms[0].id))
    for ref in selector.volumes:
        if ref in inventory.volumes:
            scope[ref] = inventory.volumes[ref]
        else:
            notes.append(f"no volume with id {ref!r}")
    return list(scope.values())


def _passes(selector: Selector, volume: Volume, facts: ResourceFacts) -> bool:
    if selector.tags:
        own, of_vm = facts.tags_of(volume.id), facts.tags_of(volume.vm_id)
        if not any(t.value in (own.get(t.key), of_vm.get(t.key)) for t in selector.tags):
            return False
    owner = facts.owner_of(volume.id) or facts.owner_of(volume.vm_id)
    if selector.accounts and (owner is None or owner.account not in selector.accounts):
        return False
    return not selector.domains or (
        owner is not None and bool({owner.domain_id, owner.domain} & set(selector.domains))
    )


def _volume_reasons(volume: Volume) -> tuple[Reason, ...]:
    if volume.busy:
        detail = f"volume {volume.name} is {volume.state}: CloudStack is working on it"
        return (Reason(Why.VOLUME_BUSY, detail),)
    if volume.state != "Ready":
        return (Reason(Why.VOLUME_NOT_READY, f"volume {volume.name} is {volume.state}"),)
    return ()


def _placement_reasons(
    volume: Volume, vm: VirtualMachine | None, inventory: InventorySnapshot
) -> tuple[Reason, ...]:
    if volume.vm_id is None:
        detail = f"volume {volume.name} is attached to no VM, so no host's agent can take it"
        return (Reason(Why.DETACHED, detail),)
    if vm is None:
        detail = f"its VM {volume.vm_id} is not in the inventory (a system VM?)"
        return (Reason(Why.VM_UNKNOWN, detail),)
    if vm.host_id is None:
        return (Reason(Why.VM_ON_NO_HOST, f"VM {vm.name} is {vm.state} and on no host"),)
    reasons: list[Reason] = []
    if vm.state != "Running":
        reasons.append(Reason(Why.VM_STATE, f"VM {vm.name} is {vm.state}, not Running"))
    host = inventory.hosts.get(vm.host_id)
    if host is None:
        detail = f"VM {vm.name}'s host {vm.host_name or vm.host_id} is not in the inventory"
        reasons.append(Reason(Why.HOST_UNKNOWN, detail))
    elif not host.usable:
        detail = (
            f"host {host.name} is {host.state}/{host.resource_state}; "
            "only Up and Enabled hosts are acted on"
        )
        reasons.append(Reason(Why.HOST_UNUSABLE, detail))
    return tuple(reasons)


def _order(volume: Volume, inventory: InventorySnapshot) -> tuple[str, int, str]:
    vm = inventory.vms.get(volume.vm_id) if volume.vm_id else None
    device = volume.device_id if volume.device_id is not None else 1 << 30
    return (vm.name if vm else "", device, volume.name)
