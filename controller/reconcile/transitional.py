"""CloudStack snapshots left in a transitional state (every Snapshot.State but BackedUp,
Destroyed and Error) longer than a threshold, each with what the agent of its VM's host
lists for the disk: the operator decides, nothing is changed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from controller.agents import AgentError, AgentPool, AgentSnapshot
from controller.cloudstack import JsonObject
from controller.inventory import InventorySnapshot
from controller.reconcile.report import TransitionalSnapshot, VolumeRow

log = logging.getLogger(__name__)

# Snapshot.State (api/src/main/java/com/cloud/storage/Snapshot.java): Allocated, Creating,
# CreatedOnPrimary, BackingUp, BackedUp, Copying, Destroying, Destroyed, Error.
TRANSITIONAL_STATES = frozenset(
    {"Allocated", "Creating", "CreatedOnPrimary", "BackingUp", "Copying", "Destroying"}
)


def parse_created(value: object) -> datetime | None:
    """CloudStack's date format: 2024-05-01T12:00:00+0000."""
    if not isinstance(value, str):
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value, layout)
        except ValueError:
            continue
    return None


def stuck(records: list[JsonObject], now: datetime, older_than: float) -> list[JsonObject]:
    """The transitional snapshots created more than `older_than` seconds before `now`
    (one whose `created` cannot be read is reported too: its age is unknown)."""
    found = []
    for record in records:
        if record.get("state") not in TRANSITIONAL_STATES:
            continue
        created = parse_created(record.get("created"))
        if created is None or (now - created).total_seconds() >= older_than:
            found.append(record)
    return found


async def describe(
    record: JsonObject,
    inventory: InventorySnapshot,
    agents: AgentPool,
    rows: Mapping[str, VolumeRow],
    now: datetime,
    timeout: float,
) -> TransitionalSnapshot:
    volume_id = str(record.get("volumeid", ""))
    created = parse_created(record.get("created"))
    volume = inventory.volumes.get(volume_id)
    vm = inventory.vms.get(volume.vm_id or "") if volume else None
    host = inventory.hosts.get(vm.host_id or "") if vm else None
    row = rows.get(volume_id)
    target = row.target if row else None
    seen: tuple[AgentSnapshot, ...] = ()
    if volume is None:
        note = "the volume is not in CloudStack's inventory"
    elif vm is None or host is None:
        note = "the volume's VM is on no host: no agent to ask"
    elif target is None:
        note = f"no disk of {vm.instance_name} on {host.name} is known to be this volume"
        note += f" ({row.status}: {row.detail})" if row else ""
    else:
        try:
            listed = await agents.client(host).list_snapshots(
                vm.instance_name, disks=(target,), timeout=timeout
            )
        except AgentError as exc:
            note = f"the agent of {host.name} did not answer: {exc}"
        else:
            seen = tuple(s for d in listed if d.target == target for s in d.snapshots)
            note = f"the agent lists {len(seen)} snapshots of {target}"
    log.warning(
        "snapshot %s of volume %s is %s since %s: %s",
        record.get("id"), volume_id, record.get("state"), record.get("created"), note,
    )  # fmt: skip
    return TransitionalSnapshot(
        snapshot_id=str(record.get("id", "")),
        name=str(record.get("name", "")),
        volume_id=volume_id,
        volume_name=volume.name if volume else str(record.get("volumename", "")),
        state=str(record.get("state", "")),
        created=created,
        age_seconds=round((now - created).total_seconds(), 3) if created else -1.0,
        vm_name=vm.name if vm else "",
        host_name=host.name if host else "",
        target=target,
        agent_snapshots=seen,
        agent_note=note,
    )
