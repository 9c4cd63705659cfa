"""Each step of a group for one member: freeze, snapshot, thaw. A step never raises: what
went wrong is written to the member's progress."""

from __future__ import annotations

import hashlib
import logging

from controller.agents import AgentJobState
from controller.groups.calls import Timing, describe
from controller.groups.model import MemberProgress

log = logging.getLogger(__name__)


def snapshot_key(group_id: str, domain: str) -> str:
    """The member's snapshot idempotency key (the agent takes at most 128 characters)."""
    digest = hashlib.sha256(f"{group_id}\0{domain}".encode()).hexdigest()[:40]
    return f"group-snapshot-{digest}"


async def freeze(p: MemberProgress, group_id: str, deadline: float, timing: Timing) -> None:
    client, domain = p.member.client, p.member.domain
    hold = min(deadline - timing.clock(), timing.config.max_hold)
    if hold <= 0:
        p.errors.append("freeze: the group's deadline passed before the freeze was sent")
        return
    p.freeze_sent = True
    try:
        held = await timing.retrying(
            f"FreezeForGroup of {domain}",
            lambda t: client.freeze_for_group(domain, group_id, hold, timeout=t),
            deadline,
        )
    except Exception as e:
        p.errors.append(f"freeze: {describe(e)}")
        return
    if not held.frozen:
        p.errors.append("freeze: the agent did not confirm the guest frozen")
        return
    p.frozen = True


async def snapshot(
    p: MemberProgress, group_id: str, name: str, deadline: float, timing: Timing
) -> None:
    client, domain = p.member.client, p.member.domain
    # From here the agent may have made a job even if no answer names it (a lost reply):
    # the cleanup finds it by this key.
    p.snapshot_key = snapshot_key(group_id, domain)
    try:
        job = await timing.retrying(
            f"CreateSnapshot of {domain}",
            lambda t: client.create_snapshot(
                domain,
                idempotency_key=p.snapshot_key,
                disks=p.member.disks,
                quiesce="required",
                name=name,
                group_id=group_id,
                timeout=t,
            ),
            deadline,
        )
        p.snapshot_job_id = job.id
        job = await timing.to_end(client, job, deadline)
    except Exception as e:
        p.errors.append(f"snapshot: {describe(e)}")
        return
    p.snapshot_state = job.state.value
    p.snapshot_ids = job.snapshot_ids
    if job.state is AgentJobState.RUNNING:
        p.errors.append(f"snapshot: job {job.id} had not ended at the group's deadline")
    elif job.state is not AgentJobState.SUCCEEDED:
        p.errors.append(f"snapshot: {job.error}")


async def thaw(p: MemberProgress, group_id: str, until: float, timing: Timing) -> None:
    client, domain = p.member.client, p.member.domain
    limit = timing.config.thaw_timeout
    try:
        frozen = await timing.retrying(
            f"ThawGroup of {domain}",
            lambda t: client.thaw_group(domain, group_id, timeout=min(t, limit)),
            until,
        )
    except Exception as e:
        frozen = True
        p.errors.append(f"thaw: {describe(e)}")
    else:
        if frozen:
            p.errors.append("thaw: the guest still reports its filesystems frozen")
    p.thawed = not frozen
    if frozen:
        log.error(
            "GROUP %s: %s on %s MAY STILL BE FROZEN (the agent thaws it at the hold's end): %s",
            group_id,
            domain,
            client.endpoint,
            p.errors[-1],
        )
