"""Snapshots several VMs, on one host or several, at one point in time: freeze all, snapshot
all, thaw all within one deadline. Any failure thaws all and removes the snapshots the other
members made, so no partial group snapshot remains; the result says what happened to each
member.

Each agent holds its guest frozen under the group's id with a deadline of its own (the time
left to the group's), and takes the member's snapshot only while that hold is in force, so a
coordinator that dies or is cut off leaves no guest frozen past the group's deadline."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from controller.groups import cleanup, members
from controller.groups.calls import Timing
from controller.groups.config import GroupConfig
from controller.groups.errors import GroupInterrupted
from controller.groups.model import GroupMember, GroupResult, MemberProgress
from controller.groups.preflight import check_members
from controller.inventory import InventorySnapshot

log = logging.getLogger(__name__)
DEFAULT_CONFIG = GroupConfig()


async def snapshot_group(
    group: Sequence[GroupMember],
    *,
    deadline: float,
    group_id: str | None = None,
    name: str = "",
    inventory: InventorySnapshot | None = None,
    config: GroupConfig = DEFAULT_CONFIG,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> GroupResult:
    """`deadline` is monotonic (`clock`'s). With `inventory`, every member is checked
    against CloudStack's view first (GroupRefused: nothing was frozen). ValueError for no
    members or a domain named twice on one agent.

    Cancelled, it still thaws every member and removes what the members made (within the
    cleanup timeout, whatever further cancellations come), then raises GroupInterrupted (a
    CancelledError) carrying the result."""
    _validate(group)
    if inventory is not None:
        check_members(group, inventory)
    group_id = group_id or f"group-{uuid.uuid4().hex}"
    timing = Timing(config, clock, sleep)
    progress = [MemberProgress(m) for m in group]
    log.info("group %s: %d members, %.1fs to go", group_id, len(group), deadline - clock())
    error, interrupted = "", False
    try:
        await asyncio.gather(*(members.freeze(p, group_id, deadline, timing) for p in progress))
        error = _failed(progress, "freeze", lambda p: p.frozen)
        if not error:
            await asyncio.gather(
                *(members.snapshot(p, group_id, name, deadline, timing) for p in progress)
            )
            error = _failed(progress, "snapshot", lambda p: p.snapshot_state == "succeeded")
    except asyncio.CancelledError:
        log.warning(
            "group %s cancelled: thawing every member and removing what they made", group_id
        )
        error, interrupted = "cancelled before every member had its snapshot", True
    interrupted |= await _finish(progress, group_id, error, timing)
    result = GroupResult(group_id, not error, tuple(p.outcome() for p in progress), error)
    _log(result)
    if interrupted:
        raise GroupInterrupted(result)
    return result


async def _finish(
    progress: list[MemberProgress], group_id: str, error: str, timing: Timing
) -> bool:
    """Thaws every member, then (when the group failed) removes what they made: each step
    in a task of its own that a cancellation of ours does not reach, and made again if it
    was cancelled all the same (asyncio.run cancels every task when it shuts down), until its
    time is up. Whether this task was cancelled meanwhile."""
    thaw_until = timing.clock() + timing.config.cleanup_timeout
    cancelled = await _run_to_end(
        lambda: _thaw_all(progress, group_id, thaw_until, timing), thaw_until, timing, group_id
    )
    if error:
        until = timing.clock() + timing.config.cleanup_timeout
        cancelled |= await _run_to_end(
            lambda: _remove_all(progress, until, timing), until, timing, group_id
        )
    return cancelled


async def _run_to_end(
    step: Callable[[], Awaitable[None]], until: float, timing: Timing, group_id: str
) -> bool:
    cancelled = False
    task = asyncio.ensure_future(step())
    while True:
        try:
            await asyncio.shield(task)
            return cancelled
        except asyncio.CancelledError:
            cancelled = True
            if not task.done():  # we were cancelled, not the step: it goes on
                log.warning("group %s: cancelled again; thawing and cleanup go on", group_id)
                continue
            if not task.cancelled():  # it ended as we were cancelled
                return cancelled
            if timing.clock() >= until:
                log.error("group %s: thaw or cleanup cancelled at its deadline", group_id)
                return cancelled
            log.warning("group %s: thaw or cleanup was cancelled; started again", group_id)
            task = asyncio.ensure_future(step())


async def _thaw_all(
    progress: list[MemberProgress], group_id: str, until: float, timing: Timing
) -> None:
    sent = [p for p in progress if p.freeze_sent]
    await asyncio.gather(*(members.thaw(p, group_id, until, timing) for p in sent))


async def _remove_all(progress: list[MemberProgress], until: float, timing: Timing) -> None:
    await asyncio.gather(*(cleanup.remove_made(p, until, timing) for p in progress))


def _validate(group: Sequence[GroupMember]) -> None:
    if not group:
        raise ValueError("a consistency group needs at least one member")
    seen = set()
    for member in group:
        where = (member.client.endpoint, member.domain)
        if where in seen:
            raise ValueError(f"{member.domain} on {member.client.endpoint} is named twice")
        seen.add(where)


def _failed(
    progress: list[MemberProgress], step: str, done: Callable[[MemberProgress], bool]
) -> str:
    failed = [p.member.domain for p in progress if not done(p)]
    return f"{step} failed for {', '.join(failed)}" if failed else ""


def _log(result: GroupResult) -> None:
    for m in result.members:
        log.info(
            "group %s: %s on %s: frozen %s, thawed %s, snapshots %s, removed %s%s",
            result.group_id,
            m.domain,
            m.endpoint,
            m.frozen,
            m.thawed,
            ",".join(m.snapshot_ids) or "none",
            ",".join(m.removed_ids) or "none",
            f", errors: {'; '.join(m.errors)}" if m.errors else "",
        )
    if result.succeeded:
        log.info("group %s: every member snapshotted at one point", result.group_id)
    else:
        log.error("group %s failed: %s", result.group_id, result.error)
    if result.leftovers:
        log.error("group %s: snapshots left behind: %s", result.group_id, result.leftovers)
