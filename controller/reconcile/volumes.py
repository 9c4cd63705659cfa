"""One VM's volumes against what its agent reports: each classified, the fixable ones fixed
(with `fix`) by updateVolume."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from controller.agents import AgentVolume
from controller.cloudstack import CloudStackClient
from controller.inventory import Host, InventorySnapshot, VirtualMachine, Volume
from controller.reconcile.disks import DiskMatch, match_disks
from controller.reconcile.lease import LeaseCheck
from controller.reconcile.paths import PathRefused, cloudstack_path
from controller.reconcile.report import VolumeRow, VolumeStatus
from controller.reconcile.update import UpdateFailed, update_path
from controller.store import Intent, IntentState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmContext:
    vm: VirtualMachine
    host: Host
    volumes: tuple[Volume, ...]


def unreachable_rows(ctx: VmContext, inventory: InventorySnapshot, error: str) -> list[VolumeRow]:
    return [_row(ctx, inventory, v, None, VolumeStatus.UNREACHABLE, error) for v in ctx.volumes]


def classify_vm(
    ctx: VmContext,
    inventory: InventorySnapshot,
    disks: Sequence[AgentVolume],
    open_intents: Mapping[str, Sequence[Intent]],
    job_in_flight: Callable[[str], bool],
) -> list[VolumeRow]:
    """A row per volume of the VM; `open_intents` by volume id; `job_in_flight(job_id)`."""
    intent_paths = {
        vid: [i.new_path for i in intents if i.new_path] for vid, intents in open_intents.items()
    }
    matches = match_disks(ctx.volumes, disks, intent_paths)
    rows = []
    for volume in ctx.volumes:
        intents = open_intents.get(volume.id, ())
        rows.append(_classify(ctx, inventory, volume, matches[volume.id], intents, job_in_flight))
    return rows


def _classify(
    ctx: VmContext,
    inventory: InventorySnapshot,
    volume: Volume,
    match: DiskMatch,
    intents: Sequence[Intent],
    job_in_flight: Callable[[str], bool],
) -> VolumeRow:
    disk = match.disk
    if disk is None:
        missing = f"the agent lists no disk of {ctx.vm.instance_name} that is this volume"
        return _row(ctx, inventory, volume, None, VolumeStatus.NO_DISK, missing)
    recorded = volume.path or ""
    if disk.location == recorded:
        return _row(ctx, inventory, volume, disk, VolumeStatus.IN_LINE, expected=recorded)
    pool = inventory.pools.get(volume.pool_id or "")
    if pool is None:
        return _row(ctx, inventory, volume, disk, VolumeStatus.DIFFERS,
                    f"pool {volume.pool_id} is not in CloudStack's inventory")  # fmt: skip
    try:
        expected = cloudstack_path(disk.location, pool, recorded)
        why = f"the agent's active image is hostsnap's overlay of {recorded}"
    except PathRefused as exc:
        named = _intent_naming(disk.location, intents)
        if named is None:
            return _row(ctx, inventory, volume, disk, VolumeStatus.DIFFERS, str(exc))
        expected, why = named.new_path or "", f"it is the new path of intent {named.id}"
    if expected == recorded:
        return _row(ctx, inventory, volume, disk, VolumeStatus.IN_LINE, expected=expected)
    busy = [i for i in intents if job_in_flight(i.job_id)]
    if volume.busy or busy:
        doing = f"CloudStack shows it {volume.state}" if volume.busy else f"job {busy[0].job_id}"
        return _row(ctx, inventory, volume, disk, VolumeStatus.BUSY,
                    f"stale ({why}), but {doing} is working on it", expected)  # fmt: skip
    return _row(ctx, inventory, volume, disk, VolumeStatus.STALE, why, expected)


def _intent_naming(location: str, intents: Sequence[Intent]) -> Intent | None:
    """The CHANGED intent whose new path is the agent's active image (its file name, the
    absolute file, or the RBD image)."""
    names = {location, posixpath.basename(location), location.partition("/")[2]}
    return next(
        (i for i in intents if i.state is IntentState.CHANGED and i.new_path in names), None
    )


def _row(
    ctx: VmContext,
    inventory: InventorySnapshot,
    volume: Volume,
    disk: AgentVolume | None,
    status: VolumeStatus,
    detail: str = "",
    expected: str | None = None,
) -> VolumeRow:
    pool = inventory.pools.get(volume.pool_id or "")
    return VolumeRow(
        volume_id=volume.id,
        volume_name=volume.name,
        vm_name=ctx.vm.name,
        domain=ctx.vm.instance_name,
        host_name=ctx.host.name,
        pool_name=pool.name if pool else (volume.pool_name or ""),
        target=disk.target if disk else None,
        cloudstack_path=volume.path,
        agent_image=disk.location if disk else None,
        expected_path=expected,
        status=status,
        detail=detail,
    )


async def fix_row(row: VolumeRow, cloudstack: CloudStackClient, leading: LeaseCheck) -> VolumeRow:
    """A STALE row fixed by updateVolume (FIXED), or FIX_FAILED with why."""
    if row.status is not VolumeStatus.STALE or row.expected_path is None:
        return row
    try:
        done = await update_path(cloudstack, row.volume_id, row.expected_path, leading)
    except UpdateFailed as exc:
        log.error("volume %s (%s): %s", row.volume_name, row.domain, exc)
        return replace(row, status=VolumeStatus.FIX_FAILED, detail=f"{row.detail}; {exc}")
    log.info("volume %s of %s fixed: %s", row.volume_name, row.domain, done)
    return replace(row, status=VolumeStatus.FIXED, detail=f"{row.detail}; {done}")
