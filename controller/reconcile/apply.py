"""After a snapshot (or delete) job succeeded: tell CloudStack each volume's new active image,
through the job's intents (RECORDED -> CHANGED -> updateVolume -> APPLIED, or ABANDONED when
the image did not change), then tag a snapshot's volumes with its time and consistency.

Called by the leader under its lease. Store writes are fenced (LeaseLost propagates: the
caller must stop acting as leader). A failed updateVolume leaves the intent CHANGED for the
reconcile pass to retry, and is reported; nothing is swallowed."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from controller.agents import AgentJob, SnapshotDisk
from controller.cloudstack import CloudStackClient, CloudStackError
from controller.inventory import InventorySnapshot, Volume
from controller.reconcile.lease import LeaseCheck, lease_check
from controller.reconcile.paths import PathRefused, cloudstack_path, same_volume
from controller.reconcile.tags import replace_tags, snapshot_tags
from controller.reconcile.update import UpdateFailed, update_path
from controller.store import Intent, IntentState, Job, Lease, StaleClaim, Store

log = logging.getLogger(__name__)


class ApplyOutcome(enum.StrEnum):
    APPLIED = "applied"  # CloudStack records the new active image
    ABANDONED = "abandoned"  # the active image did not change (RBD)
    UPDATE_FAILED = "update-failed"  # the intent stays CHANGED; the reconcile pass retries
    REFUSED = "refused"  # the new active image cannot be justified: nothing written
    NO_DISK = "no-disk"  # the volume's disk is not (or not clearly) in the agent's result
    NOT_OPEN = "not-open"  # the intent was closed meanwhile (another pass settled it)


@dataclass(frozen=True)
class AppliedVolume:
    volume_id: str
    intent_id: str | None
    target: str | None
    outcome: ApplyOutcome | None  # None: no intent, only tagged
    previous_path: str | None
    new_path: str | None
    detail: str = ""
    tagged: bool = False
    tag_error: str | None = None

    @property
    def ok(self) -> bool:
        fine = self.outcome in (None, ApplyOutcome.APPLIED, ApplyOutcome.ABANDONED)
        return fine and self.tag_error is None


@dataclass(frozen=True)
class ApplyResult:
    job_id: str
    agent_job_id: str
    consistency: str
    volumes: tuple[AppliedVolume, ...]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.volumes)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(
            f"volume {v.volume_id}: {v.detail or v.tag_error}" for v in self.volumes if not v.ok
        )


async def apply_snapshot(
    store: Store,
    lease: Lease,
    cloudstack: CloudStackClient,
    inventory_snapshot: InventorySnapshot,
    job: Job,
    agent_job: AgentJob,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    leader: Callable[[], Lease | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ApplyResult:
    """Applies the result of the SUCCEEDED snapshot job `job` (the agent's `agent_job`).
    `leader` gives the election's current lease (see `lease.py`)."""
    leading = lease_check(lease, leader, clock)
    taken_at = now()
    results: list[AppliedVolume] = []
    for intent in await asyncio.to_thread(store.intents.of_job, job.id):
        if not intent.state.open:
            continue
        results.append(
            await _apply_intent(
                store, lease, cloudstack, inventory_snapshot, intent, agent_job, leading
            )
        )
    tags = snapshot_tags(taken_at, agent_job.consistency or "unknown")
    tagged: list[AppliedVolume] = []
    snapshotted = _snapshotted(results, inventory_snapshot, job, agent_job)
    for volume_id, entry in snapshotted.items() if agent_job.operation == "snapshot" else ():
        leading()
        try:
            await replace_tags(cloudstack, "Volume", volume_id, tags)
        except CloudStackError as exc:
            log.error("job %s: tagging volume %s failed: %s", job.id, volume_id, exc)
            tagged.append(replace(entry, tagged=False, tag_error=f"tags not written: {exc}"))
        else:
            tagged.append(replace(entry, tagged=True))
    by_volume = {t.volume_id: t for t in tagged}
    final = [by_volume.pop(r.volume_id, r) for r in results] + list(by_volume.values())
    result = ApplyResult(job.id, agent_job.id, agent_job.consistency, tuple(final))
    for line in result.errors:
        log.error("job %s: %s", job.id, line)
    return result


def _snapshotted(
    results: list[AppliedVolume], inventory: InventorySnapshot, job: Job, agent_job: AgentJob
) -> dict[str, AppliedVolume]:
    """The volumes the agent snapshotted: those of the intents whose disk was found, and any
    other volume of the VM one of the result's disks clearly is."""
    found = {r.volume_id: r for r in results if r.target is not None}
    claimed = {r.target for r in found.values()}
    volumes = inventory.volumes_of(job.vm_id) if job.vm_id else ()
    for disk in agent_job.disks:
        if disk.target in claimed:
            continue
        matching = [v for v in volumes if v.path and is_disk_of(disk, v.path)]
        if len(matching) == 1 and matching[0].id not in found:
            volume = matching[0]
            found[volume.id] = AppliedVolume(volume.id, None, disk.target, None, volume.path, None)
    return found


def is_disk_of(disk: SnapshotDisk, recorded: str) -> bool:
    return same_volume(disk.active_image, recorded) or same_volume(disk.content, recorded)


async def _apply_intent(
    store: Store,
    lease: Lease,
    cloudstack: CloudStackClient,
    inventory: InventorySnapshot,
    intent: Intent,
    agent_job: AgentJob,
    leading: LeaseCheck,
) -> AppliedVolume:
    volume = inventory.volumes.get(intent.volume_id)
    recorded = (volume.path if volume else None) or intent.previous_path or ""

    def entry(outcome: ApplyOutcome, detail: str, target: str | None = None) -> AppliedVolume:
        return AppliedVolume(
            intent.volume_id, intent.id, target, outcome, recorded or None, None, detail
        )

    matching = [d for d in agent_job.disks if recorded and is_disk_of(d, recorded)]
    if len(matching) != 1:
        what = "none" if not matching else ", ".join(d.target for d in matching)
        return entry(
            ApplyOutcome.NO_DISK,
            f"path {recorded!r}: {len(matching)} disks of the agent's result match ({what})",
        )
    disk = matching[0]
    if volume is None or volume.pool_id not in inventory.pools:
        return entry(
            ApplyOutcome.REFUSED,
            f"volume or its pool not in CloudStack's inventory; {disk.active_image} not applied",
            target=disk.target,
        )
    pool = inventory.pools[volume.pool_id or ""]
    if disk.kind == "rbd" or pool.is_rbd or disk.active_image == disk.content:
        reason = "an RBD snapshot leaves the active image"
        return await asyncio.to_thread(_abandon, store, lease, intent, disk, reason)
    try:
        new_path = cloudstack_path(disk.active_image, pool, recorded)
    except PathRefused as exc:
        return entry(ApplyOutcome.REFUSED, str(exc), target=disk.target)
    if new_path == recorded and intent.state is IntentState.RECORDED:
        reason = f"the active image is still {recorded}"
        return await asyncio.to_thread(_abandon, store, lease, intent, disk, reason)
    return await _change_and_update(
        store, lease, cloudstack, volume, intent, disk, new_path, leading
    )


def _abandon(
    store: Store, lease: Lease, intent: Intent, disk: SnapshotDisk, reason: str
) -> AppliedVolume:
    try:
        store.intents.abandoned(lease, intent.id, reason)
    except StaleClaim as exc:
        return AppliedVolume(
            intent.volume_id, intent.id, disk.target, ApplyOutcome.NOT_OPEN,
            intent.previous_path, None, str(exc),
        )  # fmt: skip
    log.info("intent %s of volume %s abandoned: %s", intent.id, intent.volume_id, reason)
    return AppliedVolume(
        intent.volume_id, intent.id, disk.target, ApplyOutcome.ABANDONED,
        intent.previous_path, None, reason,
    )  # fmt: skip


async def _change_and_update(
    store: Store,
    lease: Lease,
    cloudstack: CloudStackClient,
    volume: Volume,
    intent: Intent,
    disk: SnapshotDisk,
    new_path: str,
    leading: LeaseCheck,
) -> AppliedVolume:
    previous = volume.path

    def entry(outcome: ApplyOutcome, detail: str = "") -> AppliedVolume:
        return AppliedVolume(volume.id, intent.id, disk.target, outcome, previous, new_path, detail)

    try:
        await asyncio.to_thread(store.intents.changed, lease, intent.id, new_path)
        update_detail = await update_path(cloudstack, volume.id, new_path, leading)
        await asyncio.to_thread(store.intents.applied, lease, intent.id)
    except StaleClaim as exc:
        return entry(ApplyOutcome.NOT_OPEN, str(exc))
    except UpdateFailed as exc:
        return entry(ApplyOutcome.UPDATE_FAILED, f"{exc}; the intent stays CHANGED")
    return entry(ApplyOutcome.APPLIED, update_detail)
