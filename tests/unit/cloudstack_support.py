"""What the tests against the CloudStack simulator share: a client without retries (a fault
arranged in the simulator reaches the code under test as it is) and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from controller.cloudstack import NO_RETRY, CloudStackClient, CloudStackConfig
from tests.cloudstack_sim import CloudStackSimulator

T = TypeVar("T")


def client_for(sim: CloudStackSimulator, **config: Any) -> CloudStackClient:
    settings = CloudStackConfig(sim.url, sim.api_key, sim.secret_key, **config)
    return CloudStackClient(settings, retry=NO_RETRY)


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())
