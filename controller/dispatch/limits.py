"""Concurrency limits: per host, per storage pool and in total, as asyncio semaphores.

A job holds its host's, each of its pools' and one of the total's places while it is sent
and followed. Places are always taken in one global order (host, then pools by id, then the
total), so two jobs can never each hold what the other waits for; the host comes first
because it is the scarcest: a job waiting for its busy host holds nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class Limits:
    def __init__(self, *, per_host: int, per_pool: int, total: int) -> None:
        self._per_host = per_host
        self._per_pool = per_pool
        self._total = asyncio.Semaphore(total)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._pools: dict[str, asyncio.Semaphore] = {}

    def _host(self, host_id: str) -> asyncio.Semaphore:
        return self._hosts.setdefault(host_id, asyncio.Semaphore(self._per_host))

    def _pool(self, pool_id: str) -> asyncio.Semaphore:
        return self._pools.setdefault(pool_id, asyncio.Semaphore(self._per_pool))

    def host_full(self, host_id: str) -> bool:
        return self._host(host_id).locked()

    @contextlib.asynccontextmanager
    async def hold(self, host_id: str, pool_ids: Iterable[str]) -> AsyncIterator[None]:
        order = [self._host(host_id), *(self._pool(p) for p in sorted(set(pool_ids)))]
        async with contextlib.AsyncExitStack() as held:
            for semaphore in [*order, self._total]:
                await semaphore.acquire()
                held.callback(semaphore.release)
            yield
