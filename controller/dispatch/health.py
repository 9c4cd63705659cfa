"""Agent health per host: GetHostInfo as the check. A host whose agent failed its last check
(or a call the dispatcher made) gets no new work until it answers a check again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.agents import AgentClient, AgentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostHealth:
    healthy: bool | None  # None: never checked
    checked_at: float | None  # monotonic
    failures: int  # in a row
    last_error: str | None


class AgentHealth:
    def __init__(
        self,
        *,
        interval: float,
        retry: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._retry = retry
        self._clock = clock
        self._hosts: dict[str, HostHealth] = {}
        self._checking: dict[str, asyncio.Future[None]] = {}  # one check per host at a time

    def of(self, host_id: str) -> HostHealth:
        return self._hosts.get(host_id, HostHealth(None, None, 0, None))

    def healthy(self, host_id: str) -> bool:
        """False only for an agent whose last check or call failed."""
        return self.of(host_id).healthy is not False

    def _due(self, host_id: str) -> bool:
        state = self.of(host_id)
        if state.checked_at is None:
            return True
        wait = self._interval if state.healthy else self._retry
        return self._clock() - state.checked_at >= wait

    async def ensure(self, host_id: str, client: AgentClient) -> bool:
        """Checks the agent when a check is due (the jobs of a host that ask together share
        one check); True when it may be given work."""
        check = self._checking.get(host_id)
        if check is None and self._due(host_id):
            check = asyncio.ensure_future(self._check(host_id, client))
            self._checking[host_id] = check
            check.add_done_callback(lambda _: self._checking.pop(host_id, None))
        if check is not None:
            await asyncio.shield(check)
        return self.healthy(host_id)

    async def _check(self, host_id: str, client: AgentClient) -> None:
        try:
            info = await client.host_info()
        except AgentError as e:
            self.failed(host_id, str(e))
        else:
            if self.of(host_id).healthy is False:
                log.info("agent of host %s (%s) answers again", host_id, info.hostname)
            self.answered(host_id)

    def answered(self, host_id: str) -> None:
        self._hosts[host_id] = HostHealth(True, self._clock(), 0, None)

    def failed(self, host_id: str, error: str) -> None:
        failures = self.of(host_id).failures + 1
        log.warning(
            "agent of host %s failed (%d in a row): %s; no new work for it",
            host_id,
            failures,
            error,
        )
        self._hosts[host_id] = HostHealth(False, self._clock(), failures, error)
