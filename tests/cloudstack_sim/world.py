"""The simulated cloud: zones, hosts, pools, VMs, volumes, snapshots, tags and policies.

Records are mutable (the API changes them); `to_api()` gives each one in the shape
CloudStack's response classes serialise (field names of HostResponse, VolumeResponse, ...).
Ids are UUIDs derived from names, so a test can predict them.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

_NAMESPACE = uuid.UUID("5a3c0b1e-8d4f-4c2a-9b7e-1f0d2c3b4a59")
DOMAIN_ID = str(uuid.uuid5(_NAMESPACE, "domain:ROOT"))
CREATED = "2024-05-01T12:00:00+0000"

# Volume.State, all of them: updateVolume refuses any other name.
VOLUME_STATES = frozenset(
    {
        "Allocated", "Creating", "Ready", "Migrating", "Snapshotting", "RevertSnapshotting",
        "Resizing", "Expunging", "Expunged", "Destroy", "Destroying", "UploadOp", "Copying",
        "Uploaded", "NotUploaded", "UploadInProgress", "UploadError", "UploadAbandoned",
        "Attaching",
    }
)  # fmt: skip


class _Record(Protocol):
    id: str


_R = TypeVar("_R", bound=_Record)


def make_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))


def cs_time(when: datetime) -> str:
    """CloudStack's date format in responses: 2024-05-01T12:00:00+0000."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Project:
    """A project owns its resources through an account of its own (Account.Type PROJECT)."""

    name: str
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or make_id("project", self.name)

    @property
    def account(self) -> str:
        return f"PrjAcct-{self.name}"


@dataclass(frozen=True)
class Owner:
    account: str
    project: Project | None = None


def _owner(account: str, project: Project | None = None) -> dict[str, Any]:
    """ApiResponseHelper.populateOwner: a project's resource names its project, not the
    project's account."""
    if project is not None:
        return {"projectid": project.id, "project": project.name, "domainid": DOMAIN_ID,
                "domain": "ROOT"}  # fmt: skip
    return {"account": account, "domainid": DOMAIN_ID, "domain": "ROOT"}


@dataclass
class Zone:
    name: str
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or make_id("zone", self.name)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "networktype": "Advanced",
            "allocationstate": "Enabled",
            "securitygroupsenabled": False,
            "localstorageenabled": False,
            "tags": [],
        }


@dataclass
class Host:
    name: str
    zone: Zone
    ip: str
    state: str = "Up"  # Status
    resource_state: str = "Enabled"  # ResourceState
    type: str = "Routing"
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or make_id("host", self.name)

    def to_api(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "resourcestate": self.resource_state,
            "type": self.type,
            "ipaddress": self.ip,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "created": CREATED,
            "events": "",
            "outofbandmanagement": {"enabled": False, "powerstate": "Disabled"},
        }
        if self.type == "Routing":
            record |= {"hypervisor": "KVM", "hypervisorversion": "7.2.0", "version": "4.19.1.0"}
        return record


@dataclass
class Pool:
    name: str
    zone: Zone
    type: str  # StoragePoolType: NetworkFilesystem, RBD, SharedMountPoint, Filesystem
    path: str
    ip: str
    scope: str = "CLUSTER"
    state: str = "Up"
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or make_id("pool", self.name)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "path": self.path,
            "ipaddress": self.ip,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "state": self.state,
            "scope": self.scope,
            "hypervisor": "KVM",
            "disksizetotal": 1 << 40,
            "disksizeused": 1 << 38,
            "created": CREATED,
            "overprovisionfactor": "2.0",
        }


@dataclass
class VirtualMachine:
    name: str
    zone: Zone
    instance_name: str
    state: str
    host: Host | None
    account: str = "admin"
    id: str = ""
    project: Project | None = None

    def __post_init__(self) -> None:
        self.id = self.id or make_id("vm", self.name)
        if self.project is not None:
            self.account = self.project.account

    def to_api(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "displayname": self.name,
            "instancename": self.instance_name,
            "state": self.state,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "hypervisor": "KVM",
            "created": CREATED,
            "haenable": False,
            "templateid": make_id("template", "ubuntu-22.04"),
            "templatename": "ubuntu-22.04",
            "templatedisplaytext": "Ubuntu 22.04",
            "serviceofferingid": make_id("offering", "small"),
            "serviceofferingname": "small",
            "nic": [],
            "securitygroup": [],
            "affinitygroup": [],
            "tags": [],
            **_owner(self.account, self.project),
        }
        if self.host is not None:  # CloudStack leaves hostid out for a VM on no host
            record |= {"hostid": self.host.id, "hostname": self.host.name}
        return record


@dataclass
class Volume:
    name: str
    zone: Zone
    type: str  # ROOT, DATADISK
    state: str
    pool: Pool | None
    path: str | None
    vm: VirtualMachine | None = None
    device_id: int | None = None
    size: int = 8 << 30
    chain_info: str | None = None
    account: str = "admin"
    id: str = ""
    project: Project | None = None

    def __post_init__(self) -> None:
        self.id = self.id or make_id("volume", self.name)
        if self.project is not None:
            self.account = self.project.account

    def to_api(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "type": self.type,
            "state": self.state,
            "size": self.size,
            "created": CREATED,
            "hypervisor": "KVM",
            "storagetype": "shared",
            "provisioningtype": "thin",
            "destroyed": self.state in ("Destroy", "Expunging", "Expunged"),
            "isextractable": True,
            "displayvolume": True,
            "quiescevm": False,
            "supportsstoragesnapshot": False,
            "tags": [],
            **_owner(self.account, self.project),
        }
        if self.path is not None:
            record["path"] = self.path
        if self.chain_info is not None:
            record["chaininfo"] = self.chain_info
        # VolumeJoinDaoImpl: the pool's name, or "none" (and no storageid) without one.
        record["storage"] = "none" if self.pool is None else self.pool.name
        if self.pool is not None:
            record["storageid"] = self.pool.id
        if self.vm is not None:
            record |= {
                "virtualmachineid": self.vm.id,
                "vmname": self.vm.name,
                "vmdisplayname": self.vm.name,
                "vmstate": self.vm.state,
                "vmtype": "User",
                "deviceid": self.device_id,
            }
        return record


@dataclass
class Snapshot:
    name: str
    volume: Volume
    state: str = "BackedUp"
    snapshot_type: str = "MANUAL"
    interval_type: str = "MANUAL"
    location_type: str = "PRIMARY"
    id: str = ""
    created: datetime | None = None  # CREATED when not given

    def __post_init__(self) -> None:
        self.id = self.id or make_id("snapshot", self.name)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "volumeid": self.volume.id,
            "volumename": self.volume.name,
            "volumetype": self.volume.type,
            "state": self.state,
            "snapshottype": self.snapshot_type,
            "intervaltype": self.interval_type,
            "locationtype": self.location_type,
            "created": CREATED if self.created is None else cs_time(self.created),
            "physicalsize": self.volume.size // 4,
            "virtualsize": self.volume.size,
            "zoneid": self.volume.zone.id,
            "revertable": True,
            "tags": [],
            **_owner(self.volume.account, self.volume.project),
        }


@dataclass
class SnapshotPolicy:
    volume: Volume
    interval_type: int  # the response gives the ordinal: 0 HOURLY, 1 DAILY, 2 WEEKLY, 3 MONTHLY
    schedule: str
    max_snaps: int
    timezone: str = "UTC"
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or make_id("policy", f"{self.volume.id}:{self.interval_type}")

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "volumeid": self.volume.id,
            "schedule": self.schedule,
            "intervaltype": self.interval_type,
            "maxsnaps": self.max_snaps,
            "timezone": self.timezone,
            "fordisplay": True,
            "tags": [],
            "zone": [],
        }


@dataclass
class Tag:
    key: str
    value: str
    resource_type: str  # ResourceObjectType: Volume, UserVm, Snapshot, ...
    resource_id: str
    account: str = "admin"
    project: Project | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "resourcetype": self.resource_type,
            "resourceid": self.resource_id,
            **_owner(self.account, self.project),
        }


@dataclass
class World:
    """Everything the simulator knows; `lock` guards it across the server's threads."""

    zones: dict[str, Zone] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    vms: dict[str, VirtualMachine] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    policies: dict[str, SnapshotPolicy] = field(default_factory=dict)
    tags: list[Tag] = field(default_factory=list)
    projects: dict[str, Project] = field(default_factory=dict)
    # Global settings (listConfigurations): name -> value, CloudStack's defaults for the caps.
    configurations: dict[str, str] = field(
        default_factory=lambda: {
            f"snapshot.max.{kind}": "8" for kind in ("hourly", "daily", "weekly", "monthly")
        }
    )
    lock: threading.RLock = field(default_factory=threading.RLock)
    vm_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    def add(self, record: _R) -> _R:
        tables: dict[type, dict[str, Any]] = {
            Zone: self.zones,
            Host: self.hosts,
            Pool: self.pools,
            VirtualMachine: self.vms,
            Volume: self.volumes,
            Snapshot: self.snapshots,
            SnapshotPolicy: self.policies,
            Project: self.projects,
        }
        with self.lock:
            tables[type(record)][record.id] = record
        return record

    def named(self, table: dict[str, Any], name: str) -> Any:
        with self.lock:
            found = [record for record in table.values() if record.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} records named {name!r}")
        return found[0]

    def resource_exists(self, resource_type: str, resource_id: str) -> bool:
        tables: dict[str, dict[str, Any]] = {
            "Volume": self.volumes,
            "UserVm": self.vms,
            "Snapshot": self.snapshots,
        }
        return resource_id in tables.get(resource_type, {})

    def move_to_project(self, vm: VirtualMachine, project: Project) -> None:
        """The VM and its volumes become the project's (assignVirtualMachine, in short)."""
        with self.lock:
            self.projects.setdefault(project.id, project)
            for record in [vm, *(v for v in self.volumes.values() if v.vm is vm)]:
                record.project, record.account = project, project.account

    def owner_of(self, resource_type: str, resource_id: str) -> Owner:
        """Who owns a taggable resource (a snapshot is its volume's)."""
        if resource_type == "UserVm":
            vm = self.vms[resource_id]
            return Owner(vm.account, vm.project)
        volume = (
            self.snapshots[resource_id].volume
            if resource_type == "Snapshot"
            else self.volumes[resource_id]
        )
        return Owner(volume.account, volume.project)
