"""Following an agent job to its end: WatchJob, and when the stream breaks on a transient
failure, GetJob and watch again after a backoff, all within the job's deadline."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from controller.agents import AgentClient, AgentError, AgentJob

log = logging.getLogger(__name__)


async def follow(
    client: AgentClient,
    job: AgentJob,
    *,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    backoff: Callable[[int], float],
) -> AgentJob:
    """The job at its end, or as last seen when `deadline` (monotonic) came first. A
    permanent AgentError (the agent lost the job, refuses us) is raised."""
    failures = 0
    while not job.state.final:
        remaining = deadline - clock()
        if remaining <= 0:
            return job
        try:
            async with contextlib.aclosing(client.watch_job(job.id, timeout=remaining)) as updates:
                async for update in updates:
                    job = update
                    if job.state.final:
                        return job
            # The stream ended without a final state: ask once, then watch again.
            job = await client.get_job(job.id, timeout=deadline - clock())
            failures = 0
        except AgentError as e:
            if not e.transient:
                raise
            failures += 1
            wait = min(backoff(failures), max(0.0, deadline - clock()))
            log.warning(
                "following agent job %s on %s: %s; again in %.1fs", job.id, client.endpoint, e, wait
            )
            await sleep(wait)
    return job
