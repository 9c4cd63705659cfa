"""The reconcile pass over the inventory: CloudStack's volume paths against the agents'
active images, old open intents, and snapshots stuck in transitional states.

Every Running VM on an Up host is asked of its agent (ListVolumes). With `fix` the volumes
whose CloudStack path is stale in a way that can be justified are updated (updateVolume) and
their intents closed; without it nothing changes anywhere. Differences that cannot be
explained are only flagged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from controller.agents import AgentError, AgentPool
from controller.cloudstack import CloudStackClient, CloudStackError
from controller.cloudstack.projects import list_everyone
from controller.inventory import InventorySnapshot
from controller.reconcile.backups import backup_findings
from controller.reconcile.intents import settle_intents
from controller.reconcile.lease import lease_check
from controller.reconcile.recheck import recheck
from controller.reconcile.report import (
    ReconcileReport,
    TransitionalSnapshot,
    VolumeRow,
    VolumeStatus,
)
from controller.reconcile.transitional import describe, stuck
from controller.reconcile.volumes import VmContext, classify_vm, fix_row, unreachable_rows
from controller.store import Intent, Lease, NotFound, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileConfig:
    """Seconds everywhere."""

    intent_age: float = 600.0  # open intents older than this are looked at
    snapshot_age: float = 3600.0  # transitional snapshots older than this are reported
    agent_timeout: float = 10.0  # one agent call
    concurrency: int = 8  # VMs asked at once


async def reconcile(
    store: Store,
    lease: Lease | None,
    cloudstack: CloudStackClient,
    inventory: InventorySnapshot,
    agents: AgentPool,
    *,
    fix: bool = False,
    config: ReconcileConfig | None = None,
    intents_after: float | None = None,
    transitional_after: float | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    leader: Callable[[], Lease | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReconcileReport:
    """One pass. `fix` needs the leader's `lease` (store writes are fenced by it; LeaseLost
    propagates); without `fix` the lease may be None and nothing is written.
    `intents_after` and `transitional_after` override the config's `intent_age` and
    `snapshot_age`. `leader` gives the election's current lease (see `lease.py`)."""
    if fix and lease is None:
        raise ValueError("reconcile with fix needs the leader's lease")
    cfg = config or ReconcileConfig()
    if intents_after is not None:
        cfg = replace(cfg, intent_age=intents_after)
    if transitional_after is not None:
        cfg = replace(cfg, snapshot_age=transitional_after)
    started = now()
    writer = lease if fix else None
    # The store is read and written off the event loop (a slow database must not hold up the
    # lease's renewal).
    open_intents = await asyncio.to_thread(store.intents.open)
    by_volume: dict[str, list[Intent]] = defaultdict(list)
    for intent in open_intents:
        by_volume[intent.volume_id].append(intent)
    job_final = await asyncio.to_thread(_job_finality, store, open_intents)

    rows = await _volume_rows(inventory, agents, by_volume, job_final, cfg)
    if writer is not None:
        leading = lease_check(writer, leader, clock)
        fixed = []
        for row in rows:
            leading()
            if row.status is VolumeStatus.STALE:
                row = await recheck(row, store, cloudstack, inventory, agents, cfg.agent_timeout)
            fixed.append(await fix_row(row, cloudstack, leading))
        rows = fixed
    by_id = {row.volume_id: row for row in rows}
    intent_rows = await asyncio.to_thread(
        lambda: settle_intents(
            store, writer, open_intents, by_id,
            now=now(), older_than=cfg.intent_age, job_final=job_final,
        )
    )  # fmt: skip
    transitional, errors = await _transitional(cloudstack, inventory, agents, by_id, now(), cfg)
    backups, backup_errors = await backup_findings(store, inventory, agents, cfg.agent_timeout)
    report = ReconcileReport(
        started_at=started,
        fix=fix,
        volumes=tuple(rows),
        intents=tuple(intent_rows),
        transitional=tuple(transitional),
        errors=tuple(errors + backup_errors),
        backups=tuple(backups),
    )
    log.info(
        "reconcile pass (fix %s): %s; %d intents looked at, %d snapshots stuck, %d errors",
        fix, report.counts, len(intent_rows), len(transitional), len(errors),
    )  # fmt: skip
    return report


def _job_finality(store: Store, intents: list[Intent]) -> Callable[[str], bool]:
    """Whether the job of each intent has ended, read once."""
    known: dict[str, bool] = {}
    for job_id in {i.job_id for i in intents}:
        try:
            known[job_id] = store.jobs.get(job_id).state.final
        except NotFound:
            known[job_id] = True  # no job: nothing of it is running
    return lambda job_id: known.get(job_id, True)


async def _volume_rows(
    inventory: InventorySnapshot,
    agents: AgentPool,
    intents: dict[str, list[Intent]],
    job_final: Callable[[str], bool],
    cfg: ReconcileConfig,
) -> list[VolumeRow]:
    contexts = []
    for vm in sorted(inventory.vms.values(), key=lambda v: v.name):
        host = inventory.hosts.get(vm.host_id or "")
        volumes = inventory.volumes_of(vm.id)
        if vm.state == "Running" and host is not None and host.state == "Up" and volumes:
            contexts.append(VmContext(vm, host, volumes))
    slots = asyncio.Semaphore(max(1, cfg.concurrency))

    async def one(ctx: VmContext) -> list[VolumeRow]:
        async with slots:
            try:
                disks = await agents.client(ctx.host).list_volumes(
                    ctx.vm.instance_name, timeout=cfg.agent_timeout
                )
            except AgentError as exc:
                log.warning("reconcile: agent of %s on %s: %s", ctx.vm.name, ctx.host.name, exc)
                return unreachable_rows(ctx, inventory, str(exc))
        return classify_vm(ctx, inventory, disks, intents, lambda j: not job_final(j))

    per_vm = await asyncio.gather(*(one(ctx) for ctx in contexts))
    return [row for rows in per_vm for row in rows]


async def _transitional(
    cloudstack: CloudStackClient,
    inventory: InventorySnapshot,
    agents: AgentPool,
    rows: dict[str, VolumeRow],
    now: datetime,
    cfg: ReconcileConfig,
) -> tuple[list[TransitionalSnapshot], list[str]]:
    try:
        records = await list_everyone(cloudstack, "listSnapshots")
    except CloudStackError as exc:
        log.error("reconcile: listSnapshots failed: %s", exc)
        return [], [f"listSnapshots failed: {exc}"]
    found = [
        await describe(record, inventory, agents, rows, now, cfg.agent_timeout)
        for record in stuck(records, now, cfg.snapshot_age)
    ]
    return found, []
