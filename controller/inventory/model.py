"""The inventory's records: plain frozen dataclasses made from CloudStack's list responses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol, TypeVar

from controller.cloudstack import JsonObject

# Volume.State values in which CloudStack is working on the volume: no snapshot work then.
BUSY_VOLUME_STATES = frozenset(
    {
        "Snapshotting",
        "RevertSnapshotting",
        "Migrating",
        "Resizing",
        "Attaching",
        "Creating",
        "Copying",
        "Expunging",
        "Destroying",
    }
)
# StoragePoolType values whose volumes are files on the host (qcow2 under a mount point).
FILE_POOL_TYPES = frozenset({"NetworkFilesystem", "Filesystem", "SharedMountPoint"})


def _str(record: JsonObject, key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _opt(record: JsonObject, key: str) -> str | None:
    value = record.get(key)
    return None if value is None or value == "" else str(value)


def _opt_int(record: JsonObject, key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Zone:
    id: str
    name: str

    @classmethod
    def from_api(cls, r: JsonObject) -> Zone:
        return cls(id=_str(r, "id"), name=_str(r, "name"))


@dataclass(frozen=True)
class Host:
    id: str
    name: str
    state: str  # Status: Up, Down, Disconnected, Alert, ...
    resource_state: str  # Enabled, Disabled, PrepareForMaintenance, Maintenance, ...
    zone_id: str
    ip_address: str
    hypervisor: str

    @property
    def usable(self) -> bool:
        """Only Up and Enabled hosts are acted on."""
        return self.state == "Up" and self.resource_state == "Enabled"

    @classmethod
    def from_api(cls, r: JsonObject) -> Host:
        return cls(
            id=_str(r, "id"),
            name=_str(r, "name"),
            state=_str(r, "state"),
            resource_state=_str(r, "resourcestate"),
            zone_id=_str(r, "zoneid"),
            ip_address=_str(r, "ipaddress"),
            hypervisor=_str(r, "hypervisor"),
        )


@dataclass(frozen=True)
class StoragePool:
    id: str
    name: str
    type: str  # NetworkFilesystem, RBD, Filesystem, SharedMountPoint, ...
    path: str  # export path, mount point or Ceph pool name
    ip_address: str
    zone_id: str
    state: str
    scope: str

    @property
    def is_rbd(self) -> bool:
        return self.type == "RBD"

    @property
    def is_file(self) -> bool:
        return self.type in FILE_POOL_TYPES

    @classmethod
    def from_api(cls, r: JsonObject) -> StoragePool:
        return cls(
            id=_str(r, "id"),
            name=_str(r, "name"),
            type=_str(r, "type"),
            path=_str(r, "path"),
            ip_address=_str(r, "ipaddress"),
            zone_id=_str(r, "zoneid"),
            state=_str(r, "state"),
            scope=_str(r, "scope"),
        )


@dataclass(frozen=True)
class VirtualMachine:
    id: str
    name: str
    instance_name: str  # the libvirt domain name (i-2-10-VM); admins only
    state: str  # Running, Stopped, Starting, Stopping, Migrating, ...
    host_id: str | None  # absent while the VM is not on a host
    host_name: str | None
    zone_id: str

    @classmethod
    def from_api(cls, r: JsonObject) -> VirtualMachine:
        return cls(
            id=_str(r, "id"),
            name=_str(r, "name"),
            instance_name=_str(r, "instancename"),
            state=_str(r, "state"),
            host_id=_opt(r, "hostid"),
            host_name=_opt(r, "hostname"),
            zone_id=_str(r, "zoneid"),
        )


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    type: str  # ROOT, DATADISK
    state: str  # Volume.State: Ready, Snapshotting, Migrating, ...
    vm_id: str | None
    device_id: int | None
    pool_id: str | None  # `storageid` (admins only)
    pool_name: str | None
    path: str | None  # the active image as CloudStack records it
    chain_info: str | None
    size: int | None
    zone_id: str

    @property
    def busy(self) -> bool:
        return self.state in BUSY_VOLUME_STATES

    @classmethod
    def from_api(cls, r: JsonObject) -> Volume:
        return cls(
            id=_str(r, "id"),
            name=_str(r, "name"),
            type=_str(r, "type"),
            state=_str(r, "state"),
            vm_id=_opt(r, "virtualmachineid"),
            device_id=_opt_int(r, "deviceid"),
            pool_id=_opt(r, "storageid"),
            pool_name=_pool_name(r),
            path=_opt(r, "path"),
            chain_info=_opt(r, "chaininfo"),
            size=_opt_int(r, "size"),
            zone_id=_str(r, "zoneid"),
        )


def _pool_name(r: JsonObject) -> str | None:
    """VolumeJoinDaoImpl names the pool "none" (and gives no storageid) when there is none."""
    if r.get("storageid") is None and r.get("storage") == "none":
        return None
    return _opt(r, "storage")


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


_T = TypeVar("_T", bound=_Identified)


def by_id(items: Iterable[_T]) -> Mapping[str, _T]:
    """A read-only index of records by their CloudStack id."""
    return MappingProxyType({item.id: item for item in items})


@dataclass(frozen=True)
class InventorySnapshot:
    """One consistent read of CloudStack; never changes once made."""

    zones: Mapping[str, Zone]
    hosts: Mapping[str, Host]
    pools: Mapping[str, StoragePool]
    vms: Mapping[str, VirtualMachine]
    volumes: Mapping[str, Volume]
    fetched_at: datetime
    # Each VM's volumes in device order, indexed once (every job's checks ask for them).
    _by_vm: Mapping[str, tuple[Volume, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Volume]] = {}
        for volume in self.volumes.values():
            if volume.vm_id is not None:
                grouped.setdefault(volume.vm_id, []).append(volume)
        by_vm = {
            vm_id: tuple(sorted(attached, key=lambda v: (v.device_id is None, v.device_id or 0)))
            for vm_id, attached in grouped.items()
        }
        object.__setattr__(self, "_by_vm", MappingProxyType(by_vm))

    def volumes_of(self, vm_id: str) -> tuple[Volume, ...]:
        return self._by_vm.get(vm_id, ())

    def find_vms(self, ref: str) -> list[VirtualMachine]:
        """The VMs `ref` may mean: the one of that CloudStack id, else every VM of that name
        or instance name (names are not unique across accounts)."""
        if ref in self.vms:
            return [self.vms[ref]]
        return [vm for vm in self.vms.values() if ref in (vm.name, vm.instance_name)]

    def on_file_pool(self, volume: Volume) -> bool:
        """Whether the volume is a file (its active image moves with each snapshot)."""
        pool = self.pools.get(volume.pool_id or "")
        return pool is not None and pool.is_file

    def placed(self, vm_id: str) -> tuple[VirtualMachine, Host] | None:
        """The VM and the host it is on, when CloudStack knows both."""
        vm = self.vms.get(vm_id)
        host = self.hosts.get((vm.host_id if vm else None) or "")
        return None if vm is None or host is None else (vm, host)

    def vm_by_instance_name(self, instance_name: str) -> VirtualMachine | None:
        return next((vm for vm in self.vms.values() if vm.instance_name == instance_name), None)

    def vms_on(self, host_id: str) -> tuple[VirtualMachine, ...]:
        return tuple(vm for vm in self.vms.values() if vm.host_id == host_id)

    def busy_volumes(self) -> tuple[Volume, ...]:
        return tuple(v for v in self.volumes.values() if v.busy)


@dataclass(frozen=True)
class InventoryStatus:
    fetched_at: datetime | None  # of the inventory in use
    last_error: str | None  # of the latest refresh, None when it succeeded
    consecutive_failures: int

    @property
    def stale(self) -> bool:
        return self.last_error is not None
