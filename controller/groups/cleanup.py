"""Taking back what the members of a failed group made, after the thaw (until then the group's
holds keep each domain from other jobs, deletes included)."""

from __future__ import annotations

import logging

from controller.agents import AgentError, AgentJobState
from controller.groups.calls import Timing, describe
from controller.groups.model import MemberProgress

log = logging.getLogger(__name__)


async def remove_made(p: MemberProgress, until: float, timing: Timing) -> None:
    if p.snapshot_job_id and p.snapshot_state in ("", AgentJobState.RUNNING.value):
        await _see_end(p, until, timing)
    removed = []
    for snapshot_id in p.snapshot_ids:
        if await _delete(p, snapshot_id, until, timing):
            removed.append(snapshot_id)
    p.removed_ids = tuple(removed)


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
