"""Consistency groups on one host: holding a guest frozen for a group (FreezeForGroup), the
group member's snapshot working under that hold, and ending it (ThawGroup, the watchdog,
a rescue thaw, the agent's shutdown).

The hold is a journalled job of operation "group-freeze": it records `freeze` before the
freeze and `thawed` after the confirmed thaw, so an agent that dies holding a guest thaws it
on start (recovery's jobs_left_frozen). It holds the domain's lock, so no other job works on
the domain meanwhile; the member's snapshot job works under that lock (lent_by)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import uuid
from collections.abc import Iterator

from agent import steps, validate
from agent.errors import (
    Conflict,
    HostsnapError,
    InvalidArgument,
    NotFound,
    Precondition,
    Unavailable,
)
from agent.hypervisor.ports import Guest
from agent.jobs import Job, JobState
from agent.model import GroupHoldStatus
from agent.operations import holds, rescue, volumes
from agent.operations.holds import WATCHDOG, GroupHold
from agent.operations.quiesce import Freeze, Frozen, Step, Thawed
from agent.operations.services import Services

log = logging.getLogger(__name__)

OPERATION = "group-freeze"


class HoldStep(steps.StepName):
    """The hold job's own step, beside the freeze's (quiesce.Step)."""

    TRANSITION = "hold-transition"  # a change of the hold's state (holds.Transition), after it


FAILED_FREEZE = "failed freeze"
# A retried FreezeForGroup waits for the first one at most this many guest agent calls
# (state, ping, status, freeze, status), plus a margin in seconds.
SETTLE_GUEST_CALLS = 5
SETTLE_MARGIN = 5.0


def freeze(svc: Services, domain: str, group_id: str, hold_seconds: float) -> GroupHoldStatus:
    """Holds the domain's guest frozen for the group; the same domain and group again
    returns the hold in force."""
    validate.domain_name(domain)
    validate.group_id(group_id)
    limit = svc.config.group_hold_max
    if not (math.isfinite(hold_seconds) and 0 < hold_seconds <= limit):
        raise InvalidArgument(
            f"hold_seconds must be above 0 and at most the agent's group_hold_max ({limit:g} s), "
            f"got {hold_seconds:g}",
            reason="INVALID_HOLD",
        )
    if not svc.host.exists(domain):
        raise NotFound(f"no domain named {domain!r} on this host", reason="DOMAIN_NOT_FOUND")
    hold, created = _register(svc, domain, group_id, hold_seconds)
    if not created:
        return _when_settled(svc, hold)
    journalled = False
    try:
        _check(svc, domain, hold.guest)
        svc.journal.start(hold.job_id, OPERATION, domain, _request(hold), None)
        journalled = True
        hold.on_transition = functools.partial(_journal_transition, svc, hold)
        steps.write(svc.journal, hold.job_id, Step.FREEZE, Freeze(hold_seconds))
        hold.freeze()
        steps.write(svc.journal, hold.job_id, Step.FROZEN, Frozen(hold.filesystems))
    except BaseException as e:
        _abandon(svc, hold, e, journalled)
        raise
    finally:
        hold.settled.set()  # a retried FreezeForGroup waiting for this one answers now
    log.info(
        "job %s: domain %s held frozen for group %s (%d filesystems, %.1f s at most)",
        hold.job_id,
        domain,
        group_id,
        hold.filesystems,
        hold_seconds,
    )
    return _status(svc, hold)


def _journal_transition(svc: Services, hold: GroupHold, transition: holds.Transition) -> None:
    try:
        steps.write(svc.journal, hold.job_id, HoldStep.TRANSITION, transition)
    except Exception:  # the journal's disk full or gone: the hold goes on, logged
        log.exception("job %s: hold transition not journalled: %s", hold.job_id, transition)


def _when_settled(svc: Services, hold: GroupHold) -> GroupHoldStatus:
    """A retried FreezeForGroup: the hold once its first call's freeze has ended (bounded
    by that call's own guest agent calls), never an answer while it is still under way."""
    bound = SETTLE_GUEST_CALLS * svc.config.guest_agent_timeout + SETTLE_MARGIN
    if not hold.wait_for_freeze(bound):
        raise Unavailable(
            f"the first FreezeForGroup of {hold.domain} for group {hold.group_id} is still "
            f"freezing after {bound:.0f} s; retry",
            reason="GROUP_FREEZE_IN_PROGRESS",
        )
    hold.ensure_in_force()
    return _status(svc, hold)


def thaw(svc: Services, domain: str, group_id: str) -> bool:
    """Ends the group's hold of the domain; whether the guest still reports frozen."""
    validate.domain_name(domain)
    validate.group_id(group_id)
    hold = svc.holds.get(domain)
    if hold is not None and hold.group_id != group_id and hold.released_by is None:
        raise Precondition(
            f"domain {domain} is held for group {hold.group_id}, not {group_id}",
            reason="DOMAIN_HELD",
        )
    if hold is not None and hold.group_id == group_id:
        release(svc, hold, "ThawGroup")
    return rescue.is_frozen(svc, domain)


def rescue_thaw(svc: Services, domain: str) -> bool:
    """The rescue Thaw: a group hold in force on the domain ends with it."""
    validate.domain_name(domain)
    hold = svc.holds.get(domain)
    if hold is not None and (hold.released_by is None or hold.may_be_frozen):
        release(svc, hold, "rescue Thaw")
    return rescue.thaw(svc, domain)


def release(svc: Services, hold: GroupHold, by: str) -> None:
    """Thaws the hold's guest and ends its job (again after a thaw that failed: the job's
    final state is written by the first release that saw the guest thawed). When the thaw
    fails, the agent thaws again in the background until the guest is thawed or gone."""
    first = hold.mark_released(by)
    if first and by == WATCHDOG:
        steps.write(svc.journal, hold.job_id, Step.WATCHDOG_FIRED)
    try:
        seconds = hold.thaw()
    except HostsnapError as e:
        log.critical("job %s: domain %s may still be frozen: %s", hold.job_id, hold.domain, e)
        svc.journal.fail(hold.job_id, str(e), e.reason, type(e).__name__)
        _keep_thawing(svc, hold)
        raise
    finally:
        hold.unlock_if_unused()
    if seconds is not None:
        steps.write(svc.journal, hold.job_id, Step.THAWED, Thawed(seconds, by))
        svc.observe_freeze(seconds)
    if not hold.claim_outcome():
        return
    by = hold.released_by or by
    if by == FAILED_FREEZE:
        return  # the job was failed with the freeze's error
    if by == WATCHDOG:
        svc.journal.fail(
            hold.job_id,
            f"the guest was held past the {hold.seconds:.1f} s hold and thawed by the watchdog",
            "FREEZE_DEADLINE_EXCEEDED",
            "Precondition",
        )
    else:
        result = {**_request(hold), "released_by": by, "frozen_seconds": seconds or 0.0}
        svc.journal.succeed(hold.job_id, result)


def release_all(svc: Services, by: str) -> None:
    """Ends every hold in force, and thaws again each released one whose thaw failed (the
    agent is stopping)."""
    for hold in svc.holds.to_end():
        try:
            release(svc, hold, by)
        except HostsnapError as e:
            log.critical("domain %s may stay frozen after the agent stops: %s", hold.domain, e)


def held(svc: Services, domain: str, group_id: str) -> GroupHold:
    """The hold a group member's snapshot works under (FAILED_PRECONDITION when none)."""
    validate.group_id(group_id)
    hold = svc.holds.get(domain)
    if hold is None or hold.group_id != group_id or not hold.frozen:
        raise Precondition(
            f"domain {domain} is not held frozen for group {group_id}; FreezeForGroup first",
            reason="GROUP_NOT_HELD",
        )
    hold.ensure_in_force()
    if hold.user is not None:
        raise holds.used_by_other(hold)
    return hold


@contextlib.contextmanager
def working_under(hold: GroupHold, job_id: str) -> Iterator[None]:
    hold.use(job_id)
    try:
        yield
    finally:
        hold.done()


def _register(
    svc: Services, domain: str, group_id: str, hold_seconds: float
) -> tuple[GroupHold, bool]:
    """The hold in force for this group, or a new one holding the domain's lock. The libvirt
    calls a new hold needs are made outside the holds' lock: a hung libvirt must not delay
    ThawGroup or a rescue Thaw of another domain."""
    with svc.holds.lock:
        existing = _in_force(svc, domain, group_id)
    if existing is not None:
        return existing, False
    guest = svc.guest_agent(domain)
    gone = functools.partial(_gone, svc, domain, _uuid(svc, domain))
    with svc.holds.lock:
        existing = _in_force(svc, domain, group_id)  # made meanwhile by a concurrent call
        if existing is not None:
            return existing, False
        hold = GroupHold(
            domain,
            group_id,
            uuid.uuid4().hex,
            hold_seconds,
            guest,
            svc.monotonic,
            lambda h: _watchdog(svc, h),
            gone,
        )
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(svc.locks.hold([f"domain {domain}"], hold.job_id, OPERATION))
        except Conflict as e:
            raise Precondition(
                f"domain {domain} has a job in progress: {e}", reason="DOMAIN_BUSY"
            ) from e
        hold.unlock = stack.close
        svc.holds.by_domain[domain] = hold
        return hold, True


def _in_force(svc: Services, domain: str, group_id: str) -> GroupHold | None:
    """This group's hold in force on the domain; None when there is none. Called under the
    holds' lock."""
    existing = svc.holds.by_domain.get(domain)
    if existing is not None and existing.released_by is None:
        if existing.group_id != group_id:
            raise Precondition(
                f"domain {domain} is held for group {existing.group_id}",
                reason="DOMAIN_HELD",
            )
        return existing
    if existing is not None and existing.group_id == group_id:
        raise Precondition(
            f"the hold of group {group_id} on {domain} has ended ({existing.released_by}); "
            "a group is frozen once: start again with a new group id",
            reason="GROUP_HOLD_ENDED",
        )
    return None


def _check(svc: Services, domain: str, guest: Guest) -> None:
    state, _ = svc.host.state(domain)
    if not volumes.is_live(state):
        raise Precondition(f"domain {domain} is {state}; only a running guest can be held frozen")
    # An agent that does not answer a ping is never asked to freeze: a freeze that fails
    # half-way leaves it unknown whether the guest is frozen.
    guest.ping()
    if guest.freeze_status() != "thawed":
        raise Precondition(
            f"domain {domain} is frozen already (by someone else); thaw it first",
            reason="GUEST_ALREADY_FROZEN",
        )


def _uuid(svc: Services, domain: str) -> str | None:
    return next((u for n, u, _ in svc.host.list_domains(True) if n == domain), None)


def _gone(svc: Services, domain: str, uuid_then: str | None) -> bool:
    """Whether the held domain stopped (or was replaced by another of that name)."""
    try:
        running = {n: u for n, u, s in svc.host.list_domains(False) if volumes.is_live(s)}
    except HostsnapError:
        return False  # libvirt cannot say: the guest may still be frozen
    return running.get(domain) != uuid_then


def _abandon(svc: Services, hold: GroupHold, error: BaseException, journalled: bool) -> None:
    """A hold whose freeze failed: thawed (a failed freeze may have frozen some
    filesystems), its job failed, the domain given back. A guest that stays frozen is
    thawed again in the background until it is thawed (and stays in `svc.holds` meanwhile,
    for a rescue Thaw and the agent's shutdown)."""
    hold.mark_released(FAILED_FREEZE)
    reason = error.reason if isinstance(error, HostsnapError) else "INTERNAL"
    message = str(error)
    thawed = False
    try:
        seconds = hold.thaw()
        thawed = True
        if journalled and seconds is not None:
            done = Thawed(seconds, FAILED_FREEZE)
            steps.write(svc.journal, hold.job_id, Step.THAWED, done)
    except HostsnapError as thaw_error:
        reason, message = thaw_error.reason, f"{error}; then {thaw_error}"
    finally:
        hold.unlock_if_unused()
        if thawed:
            svc.holds.forget(hold)  # the group may try again: nothing was held
    if journalled:
        error_type = type(error).__name__ if isinstance(error, HostsnapError) else "OperationFailed"
        svc.journal.fail(hold.job_id, message, reason, error_type)
    if not thawed:
        _keep_thawing(svc, hold)


def _watchdog(svc: Services, hold: GroupHold) -> None:
    """Thaws at the hold's deadline; a thaw that fails is tried again (release starts
    that), so a guest is never left frozen for want of a caller."""
    log.error(
        "job %s: domain %s still held for group %s at its %.1f s deadline; thawing now",
        hold.job_id,
        hold.domain,
        hold.group_id,
        hold.seconds,
    )
    try:
        release(svc, hold, WATCHDOG)
    except Exception as e:  # the watchdog thread must never die silently
        log.critical("domain %s: the watchdog's thaw failed (tried again): %s", hold.domain, e)


def _keep_thawing(svc: Services, hold: GroupHold) -> None:
    """A thaw of the hold's guest failed: one background thread thaws it again, with a
    backoff, until it is thawed or its domain is gone."""
    if not hold.start_retrying():
        return
    by = hold.released_by or "retry"
    threading.Thread(
        target=holds.keep_thawing,
        args=(hold, lambda: release(svc, hold, by)),
        name=f"hostsnap-thaw-{hold.domain}",
        daemon=True,
    ).start()


def _request(hold: GroupHold) -> dict[str, object]:
    return {"domain": hold.domain, "group_id": hold.group_id, "hold_seconds": hold.seconds}


def _status(svc: Services, hold: GroupHold) -> GroupHoldStatus:
    remaining = hold.remaining()
    return GroupHoldStatus(
        domain=hold.domain,
        group_id=hold.group_id,
        job_id=hold.job_id,
        frozen=hold.frozen,
        held_until=svc.wall_clock() + remaining,
        remaining_seconds=remaining,
        filesystems=hold.filesystems,
    )


def recover(svc: Services, job: Job) -> tuple[JobState, str]:
    if not steps.reached(job, Step.FREEZE):
        return JobState.FAILED, "it stopped before freezing the guest"
    return JobState.FAILED, "the group hold ended with the agent; the guest was thawed on start"
