"""Leader election over the lease: at most one controller of a zone acts at a time.

`tick()` is one step, called every `next` seconds it returns: a follower tries to take the
lease; the leader renews it. `leader()` answers at the moment it is called, against the local
monotonic clock, so a leader whose renewals stopped getting through (database down, process
paused) stops acting when its lease runs out, even if no tick came. Every store write a leader
makes presents its `Lease` and is refused once the lease is gone (`tx.fenced`).

A controller that dies holding the lease is replaced when the lease has expired and a follower
next tries: within `duration + retry_interval` of its last renewal (`takeover_within`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from controller.store.errors import LeaseLost, StoreUnavailable
from controller.store.leases import Leases
from controller.store.records import Lease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    name: str = "controller"
    duration: float = 15.0  # seconds a lease lasts past its last renewal
    renew_interval: float = 5.0  # the leader renews this often
    retry_interval: float = 2.0  # a follower tries to take over this often
    margin: float = 1.0  # the leader stops acting this long before the database's expiry

    def __post_init__(self) -> None:
        if min(self.duration, self.renew_interval, self.retry_interval) <= 0 or self.margin < 0:
            raise ValueError("lease times must be positive")
        if self.renew_interval + self.margin >= self.duration:
            raise ValueError(
                f"a lease of {self.duration} s cannot be renewed every {self.renew_interval} s "
                f"and stop {self.margin} s early"
            )

    @property
    def takeover_within(self) -> float:
        """Longest time from a dead leader's last renewal to a follower leading."""
        return self.duration + self.retry_interval


def default_holder() -> str:
    """This process, unique even across restarts on the same host."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderElection:
    def __init__(
        self,
        leases: Leases,
        config: LeaseConfig,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self.config = config
        self.holder = holder or default_holder()
        self._clock = clock
        self._lease: Lease | None = None
        self._renew_at = 0.0

    def leader(self) -> Lease | None:
        """The lease to act under, or None when this controller must not act as leader."""
        lease = self._lease
        return lease if lease is not None and lease.valid_at(self._clock()) else None

    def tick(self) -> float:
        """One step of the election; returns the seconds until the next one is due."""
        config = self.config
        now = self._clock()
        lease = self._lease
        if lease is not None and not lease.valid_at(now):
            log.warning(
                "lease %r epoch %d ran out before renewal: stopped leading",
                config.name,
                lease.epoch,
            )
            self._lease = lease = None
        try:
            if lease is None:
                self._lease = self._leases.acquire(
                    config.name, self.holder, config.duration, config.margin
                )
                if self._lease is None:
                    return config.retry_interval
            elif now >= self._renew_at:
                self._lease = self._leases.renew(lease, config.duration, config.margin)
            else:
                return self._renew_at - now
        except LeaseLost as e:
            log.warning("%s: stopped leading", e)
            self._lease = None
            return config.retry_interval
        except StoreUnavailable as e:
            # Keep the lease we have until it runs out; try again sooner than usual.
            log.warning("lease %r not renewed: %s", config.name, e)
            return min(config.retry_interval, config.renew_interval)
        self._renew_at = now + config.renew_interval
        return config.renew_interval

    def resign(self) -> None:
        """Stops leading and frees the lease for a follower at once (on orderly shutdown)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                self._leases.release(lease)
            except StoreUnavailable as e:
                log.warning("lease %r not released (it will expire): %s", self.config.name, e)

    async def run(self, stop: asyncio.Event) -> None:
        """Ticks until `stop` is set, off the event loop; resigns at the end."""
        try:
            while not stop.is_set():
                delay = await asyncio.to_thread(self.tick)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            await asyncio.to_thread(self.resign)
