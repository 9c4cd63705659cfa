"""A consistency group's hold of one domain as its agent reports it (FreezeForGroup)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AgentGroupFreeze:
    domain: str
    group_id: str
    job_id: str  # the hold's journalled job on the agent (operation "group-freeze")
    frozen: bool  # the guest agent confirmed the filesystems frozen
    remaining_seconds: float  # until the agent's watchdog thaws the guest
    filesystems: int

    @classmethod
    def from_proto(cls, held: Any) -> AgentGroupFreeze:
        return cls(
            domain=str(held.domain),
            group_id=str(held.group_id),
            job_id=str(held.job_id),
            frozen=bool(held.frozen),
            remaining_seconds=float(held.remaining_seconds),
            filesystems=int(held.filesystems),
        )
