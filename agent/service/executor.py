"""Runs jobs in worker threads and answers as soon as a job is in the journal.

A request the operation refuses before its job exists (bad input, a busy volume) is answered
with that error at once; a job that started is answered with the job, and runs on. When every
worker is busy a new job is refused at once (RESOURCE_EXHAUSTED), never queued behind them.
Once drained (before a restart), every new job is refused (UNAVAILABLE, AGENT_DRAINING)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.errors import Capacity, Unavailable
from agent.operations.services import AGENT_STOPPING, CALLER_GONE

log = logging.getLogger(__name__)

Operation = Callable[[Callable[[str], None]], Any]
Cancel = Callable[[str, str], None]  # job id, why


class JobExecutor:
    def __init__(self, workers: int, cancel: Cancel) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hostsnap-job")
        self._cancel = cancel
        self._busy = 0
        self.running: set[str] = set()
        self.draining = False

    async def start(self, operation: Operation) -> str:
        """Runs `operation(on_started)`; returns the job id once it has one."""
        self.refuse_if_draining()
        if self._busy >= self._workers:
            raise Capacity(
                f"all {self._workers} job workers are busy; retry later", reason="AGENT_BUSY"
            )
        loop = asyncio.get_running_loop()
        started: asyncio.Future[str] = loop.create_future()

        def on_started(job_id: str) -> None:
            self.running.add(job_id)
            loop.call_soon_threadsafe(_settle, started, job_id)

        self._busy += 1
        finished = loop.run_in_executor(self._pool, operation, on_started)
        finished.add_done_callback(lambda outcome: self._ended(started, outcome))
        try:
            await asyncio.wait({started, finished}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The caller gave up before the job had an id: stop it at its first safe point.
            started.add_done_callback(lambda f: self._cancel(f.result(), CALLER_GONE))
            raise
        if started.done():
            return started.result()
        finished.result()  # the operation refused the request before its job existed
        raise RuntimeError("the operation ended without starting a job")

    def _ended(self, started: asyncio.Future[str], outcome: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if started.done() and not started.cancelled():
            self.running.discard(started.result())
        error = outcome.exception()
        if error is not None and started.done():
            log.info("job ended with an error (recorded in its journal entry): %s", error)

    def drain(self) -> None:
        """No new job from now on; the running ones go on to their end."""
        if not self.draining:
            log.warning("draining for a restart: new jobs are refused, %d run on", self._busy)
        self.draining = True

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise Unavailable(
                "the agent is draining before a restart and starts no new job; retry once it "
                "has restarted",
                reason="AGENT_DRAINING",
            )

    @property
    def starting(self) -> int:
        """Operations that have not got a job id yet (they may still refuse the request)."""
        return max(self._busy - len(self.running), 0)

    def cancel_running(self) -> None:
        for job_id in list(self.running):
            self._cancel(job_id, AGENT_STOPPING)

    def shutdown(self) -> None:
        """Waits for the running jobs to end (they thaw and journal as they go)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _settle(future: asyncio.Future[str], job_id: str) -> None:
    if not future.done():
        future.set_result(job_id)
