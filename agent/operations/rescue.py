"""Rescue: is a guest frozen, and thawing it. Used by the agent and by `hostsnap --direct`."""

from __future__ import annotations

from agent import validate
from agent.errors import Precondition
from agent.operations import volumes
from agent.operations.services import Services


def is_frozen(svc: Services, domain: str) -> bool:
    """What the guest agent reports; a domain that does not run is not frozen."""
    validate.domain_name(domain)
    if not volumes.is_live(svc.host.state(domain)[0]):
        return False
    return svc.guest_agent(domain).freeze_status() == "frozen"


def thaw(svc: Services, domain: str) -> bool:
    """Thaws the guest's filesystems; returns whether it still reports frozen."""
    validate.domain_name(domain)
    state = svc.host.state(domain)[0]
    if not volumes.is_live(state):
        raise Precondition(
            f"domain {domain} is {state}: a domain that does not run has nothing to thaw",
            reason="DOMAIN_NOT_RUNNING",
        )
    svc.guest_agent(domain).thaw()
    return is_frozen(svc, domain)
