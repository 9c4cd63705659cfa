"""A consistency group's members and what happened to each: plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.agents import AgentClient


@dataclass(frozen=True)
class GroupMember:
    """One VM of the group: the agent of the host it runs on and its libvirt domain."""

    client: AgentClient
    domain: str  # the libvirt domain (CloudStack's instance name)
    disks: tuple[str, ...] = ()  # target devices; empty means every disk
    vm_id: str | None = None  # CloudStack's id; else the inventory is searched by `domain`


@dataclass
class MemberProgress:
    """What the coordinator did to one member so far (filled in as it goes)."""

    member: GroupMember
    freeze_sent: bool = False  # FreezeForGroup was sent: the guest may be frozen
    frozen: bool = False  # the agent confirmed the hold
    thawed: bool | None = None  # confirmed not frozen after ThawGroup; None: not asked
    snapshot_key: str = ""  # CreateSnapshot was sent with this idempotency key
    snapshot_job_id: str = ""  # known once an answer to CreateSnapshot named the job
    snapshot_ids: tuple[str, ...] = ()
    snapshot_state: str = ""  # the agent job's final state ("running" when not seen to end)
    removed_ids: tuple[str, ...] = ()
    errors: list[str] = field(default_factory=list)

    def outcome(self) -> MemberOutcome:
        return MemberOutcome(
            domain=self.member.domain,
            endpoint=self.member.client.endpoint,
            frozen=self.frozen,
            thawed=self.thawed,
            snapshot_key=self.snapshot_key,
            snapshot_job_id=self.snapshot_job_id,
            snapshot_state=self.snapshot_state,
            snapshot_ids=self.snapshot_ids,
            removed_ids=self.removed_ids,
            errors=tuple(self.errors),
        )


@dataclass(frozen=True)
class MemberOutcome:
    domain: str
    endpoint: str  # the agent that served the member
    frozen: bool  # its guest was confirmed frozen for the group
    # Confirmed not frozen at the end (True), may still be frozen (False), never frozen nor
    # asked to be (None).
    thawed: bool | None
    # The idempotency key CreateSnapshot was sent with ("" when it was not sent): the agent's
    # ListJobs finds the member's job by it.
    snapshot_key: str
    snapshot_job_id: str  # the member's snapshot job on its agent ("" when none is known)
    snapshot_state: str  # that job's last known state
    snapshot_ids: tuple[str, ...]  # what the job made (one per disk)
    removed_ids: tuple[str, ...]  # of those, deleted again because the group failed
    errors: tuple[str, ...]  # everything that went wrong for this member, in order

    @property
    def kept_ids(self) -> tuple[str, ...]:
        """Snapshots of this member that still exist after the group."""
        return tuple(i for i in self.snapshot_ids if i not in self.removed_ids)


@dataclass(frozen=True)
class GroupResult:
    group_id: str
    succeeded: bool  # every member has its snapshot, taken at the group's one point
    members: tuple[MemberOutcome, ...]
    error: str = ""  # why the group failed

    @property
    def all_thawed(self) -> bool:
        return all(m.thawed is not False for m in self.members)

    @property
    def leftovers(self) -> tuple[str, ...]:
        """Snapshots of a failed group that could not be removed (empty when it succeeded)."""
        if self.succeeded:
            return ()
        return tuple(i for m in self.members for i in m.kept_ids)
