"""Agent calls of a group, each bounded by a monotonic deadline: transient failures (the
agent unreachable, busy) are tried again with the same request until then; every request
the coordinator makes is idempotent (the same group, the same idempotency key)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from controller.agents import AgentClient, AgentError, AgentJob
from controller.dispatch.follow import follow
from controller.groups.config import GroupConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


def describe(error: Exception) -> str:
    """An error as one line, with the agent's machine-readable reason when it sent one."""
    if isinstance(error, AgentError) and error.reason:
        return f"{error} (reason {error.reason})"
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class Timing:
    config: GroupConfig
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]

    async def retrying(self, what: str, call: Callable[[float], Awaitable[T]], until: float) -> T:
        """`call(timeout)` until it answers, a permanent error, or `until`."""
        failures = 0
        while True:
            try:
                return await call(max(0.001, until - self.clock()))
            except AgentError as e:
                failures += 1
                wait = self.config.backoff(failures)
                if not e.transient or self.clock() + wait >= until:
                    raise
                log.warning("%s: %s; again in %.1fs", what, e, wait)
                await self.sleep(wait)

    async def to_end(self, client: AgentClient, job: AgentJob, until: float) -> AgentJob:
        """The job at its end, or as last seen at `until`."""
        return await follow(
            client,
            job,
            deadline=until,
            clock=self.clock,
            sleep=self.sleep,
            backoff=self.config.backoff,
        )
