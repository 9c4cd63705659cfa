"""A policy's snapshots backed up: once the agent's snapshot job succeeded, one backup job per
disk snapshot, to the policy's target, on the host that took it (the snapshot is in that
agent's journal). Created before the snapshot job is recorded SUCCEEDED, in the same run: the
run ends, and its retention runs, only after its backups, so an incremental backup still finds
the snapshot it builds on. The key makes a replay after failover the same job."""

from __future__ import annotations

import asyncio
import logging

from controller import store
from controller.agents import AgentClient, AgentError, AgentJob
from controller.policies import Policy
from controller.runner.backup_retention import needs_full

log = logging.getLogger(__name__)

BACKUP_TIMEOUT = 6 * 3600.0  # a first, full backup of a large volume
BACKUP = store.JobKind.BACKUP


def backup_specs(
    job: store.Job, agent_job: AgentJob, host_id: str, target: str, full: frozenset[str]
) -> list[store.JobSpec]:
    """`full`: the disks whose backup starts a new chain."""
    return [
        store.JobSpec(
            store.JobKind.BACKUP,
            host_id,
            vm_id=job.vm_id,
            volume_id=job.volume_id,
            params={
                "snapshot_id": disk.snapshot_id,
                "target": target,
                "disk": disk.target,
                "snapshot_job": job.id,
                "full": "true" if disk.target in full else "false",
            },
            run_id=job.run_id,
            idempotency_key=f"hostsnap-backup/{disk.snapshot_id}/{target}",
            timeout=BACKUP_TIMEOUT,
        )
        for disk in agent_job.disks
        if disk.snapshot_id
    ]


async def backups_of(
    db: store.Store, job: store.Job, agent_job: AgentJob, host_id: str, agent: AgentClient
) -> list[store.Job]:
    """The backup jobs of a policy's snapshot job that succeeded (none when its policy backs
    nothing up). `agent` lists the target's backups when the policy keeps only some."""
    if job.kind is not store.JobKind.SNAPSHOT or job.run_id is None:
        return []
    run = await asyncio.to_thread(db.runs.get, job.run_id)
    policy = (await asyncio.to_thread(db.policies.get, run.policy_id)).policy
    if policy is None or policy.backup_target is None:
        return []
    # A replay (a successor adopted the snapshot job) keeps what was made: `full` is decided
    # once, for the disks that have no backup job yet.
    existing = {
        j.params.get("disk", ""): j
        for j in await asyncio.to_thread(db.jobs.find, run_id=job.run_id, kinds=(BACKUP,))
        if j.params.get("snapshot_job") == job.id
    }
    missing = [d for d in agent_job.disks if d.target not in existing]
    full = await _full_disks(agent, agent_job, policy) if missing else frozenset()
    made: list[store.Job] = []
    for spec in backup_specs(job, agent_job, host_id, policy.backup_target, full):
        found = existing.get(spec.params["disk"])
        if found is None:
            found = await asyncio.to_thread(db.jobs.create, spec)
        made.append(found)
    log.info("job %s: %d snapshots to back up to %s", job.id, len(made), policy.backup_target)
    return made


async def _full_disks(agent: AgentClient, agent_job: AgentJob, policy: Policy) -> frozenset[str]:
    """The disks whose chain of backups is as long as the policy keeps (never, unasked)."""
    if policy.keep_backups is None or policy.backup_target is None:
        return frozenset()
    try:
        listed = await agent.list_backups(policy.backup_target, agent_job.domain)
    except AgentError as e:
        log.warning(
            "backups of %s on %s not listed: incremental: %s", agent_job.domain, policy.name, e
        )
        return frozenset()
    return frozenset(
        disk.target
        for disk in agent_job.disks
        if needs_full(
            [b for b in listed if b.volume == f"{agent_job.domain}/{disk.target}"],
            policy.keep_backups,
        )
    )
