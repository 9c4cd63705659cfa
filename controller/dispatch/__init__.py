"""Dispatch of the store's jobs to the agents: checks against CloudStack right before acting,
limits per host, pool and in total, claims under the leader's epoch, retries with the same
idempotency key, deadlines and agent health."""

from controller.dispatch.attempt import OnSucceeded
from controller.dispatch.config import DispatchConfig
from controller.dispatch.dispatcher import Dispatcher
from controller.dispatch.fresh import FreshInventory, InventorySource
from controller.dispatch.health import AgentHealth, HostHealth
from controller.dispatch.limits import Limits
from controller.dispatch.outcome import Outcome, Result
from controller.dispatch.preflight import Skip, Target, check

__all__ = [
    "AgentHealth",
    "DispatchConfig",
    "Dispatcher",
    "FreshInventory",
    "HostHealth",
    "InventorySource",
    "Limits",
    "OnSucceeded",
    "Outcome",
    "Result",
    "Skip",
    "Target",
    "check",
]
