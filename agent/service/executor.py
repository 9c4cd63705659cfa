"""Runs jobs in worker threads and answers as soon as a job is in the journal.

A request the operation refuses before its job exists (bad input, a busy volume) is answered
with that error at once; a job that started is answered with the job, and runs on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

Operation = Callable[[Callable[[str], None]], Any]


class JobExecutor:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hostsnap-job")
        self.running: set[str] = set()

    async def start(self, operation: Operation) -> str:
        """Runs `operation(on_started)`; returns the job id once it has one."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[str] = loop.create_future()

        def on_started(job_id: str) -> None:
            loop.call_soon_threadsafe(_settle, started, job_id)

        finished = loop.run_in_executor(self._pool, operation, on_started)
        await asyncio.wait({started, finished}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            job_id = started.result()
            self.running.add(job_id)

            def ended(outcome: asyncio.Future[Any]) -> None:
                self.running.discard(job_id)
                _log_outcome(outcome)

            finished.add_done_callback(ended)
            return job_id
        finished.result()  # the operation refused the request before its job existed
        raise RuntimeError("the operation ended without starting a job")

    def shutdown(self, cancel: Callable[[str], None]) -> None:
        """Asks the running jobs to stop at their next safe point and waits for them (they
        thaw and journal as they go)."""
        for job_id in list(self.running):
            cancel(job_id)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _settle(future: asyncio.Future[str], job_id: str) -> None:
    if not future.done():
        future.set_result(job_id)


def _log_outcome(finished: asyncio.Future[Any]) -> None:
    error = finished.exception()
    if error is not None:
        log.info("job ended with an error (recorded in its journal entry): %s", error)
