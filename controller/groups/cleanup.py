"""Taking back what the members of a failed group made, after the thaw (until then the group's
holds keep each domain from other jobs, deletes included)."""

from __future__ import annotations

import logging

from controller.agents import AgentError, AgentJobState
from controller.groups.calls import Timing, describe
from controller.groups.model import MemberProgress

log = logging.getLogger(__name__)


# How many of a domain's newest jobs are searched for a member's lost job (the domain was
# held for the group meanwhile, so the group's job is among the newest few).
JOBS_SEARCHED = 1000


async def remove_made(p: MemberProgress, until: float, timing: Timing) -> None:
    if p.snapshot_key and not p.snapshot_job_id:
        await _find_job(p, until, timing)
    if p.snapshot_job_id and p.snapshot_state in ("", AgentJobState.RUNNING.value):
        await _see_end(p, until, timing)
    removed = []
    for snapshot_id in p.snapshot_ids:
        if await _delete(p, snapshot_id, until, timing):
            removed.append(snapshot_id)
    p.removed_ids = tuple(removed)


async def _find_job(p: MemberProgress, until: float, timing: Timing) -> None:
    """CreateSnapshot was sent but no answer named its job (the replies were lost, or the
    group was cut short meanwhile): the agent may still have made it. Looked for among the
    domain's jobs by the member's idempotency key."""
    client, domain, key = p.member.client, p.member.domain, p.snapshot_key
    log.info("looking for the snapshot job of %s (key %s) on %s", domain, key, client.endpoint)
    try:
        jobs = await timing.retrying(
            f"ListJobs of {domain}",
            lambda t: client.list_jobs(domain, limit=JOBS_SEARCHED, timeout=t),
            until,
        )
    except AgentError as e:
        p.errors.append(
            f"cleanup: no answer named the snapshot job (key {key}) and ListJobs failed: "
            f"{describe(e)}; a snapshot of the group may remain"
        )
        return
    job = next((j for j in jobs if j.idempotency_key == key), None)
    if job is None:
        log.info("%s on %s: no job of key %s: nothing was made", domain, client.endpoint, key)
        return
    p.snapshot_job_id = job.id
    p.errors.append(f"cleanup: no answer named the snapshot job; found it by its key: {job.id}")


async def _see_end(p: MemberProgress, until: float, timing: Timing) -> None:
    """A snapshot job not seen to end by the group's deadline: asked to stop, and followed to
    its end (it may still succeed: then its snapshots are removed like the others')."""
    client = p.member.client
    try:
        job = await client.get_job(p.snapshot_job_id, timeout=until - timing.clock())
        if not job.state.final:
            try:
                job = await client.cancel_job(job.id, timeout=until - timing.clock())
            except AgentError as e:  # it ended meanwhile, or the agent is away: followed below
                log.warning("cancelling job %s on %s: %s", job.id, client.endpoint, e)
        job = await timing.to_end(client, job, until)
    except AgentError as e:
        p.errors.append(
            f"cleanup: job {p.snapshot_job_id}: {describe(e)}; its snapshots may remain"
        )
        return
    p.snapshot_state = job.state.value
    p.snapshot_ids = job.snapshot_ids
    if not job.state.final:
        p.errors.append(f"cleanup: job {job.id} still runs; its snapshots may remain")


async def _delete(p: MemberProgress, snapshot_id: str, until: float, timing: Timing) -> bool:
    client, domain = p.member.client, p.member.domain
    try:
        job = await timing.retrying(
            f"DeleteSnapshot {snapshot_id}",
            lambda t: client.delete_snapshot(
                snapshot_id,
                idempotency_key=f"group-delete-{snapshot_id}",
                domain=domain,
                timeout=t,
            ),
            until,
        )
        job = await timing.to_end(client, job, until)
    except AgentError as e:
        p.errors.append(f"cleanup: removing snapshot {snapshot_id}: {describe(e)}")
        return False
    if job.state is not AgentJobState.SUCCEEDED:
        p.errors.append(f"cleanup: removing snapshot {snapshot_id}: {job.error}")
        return False
    return True
