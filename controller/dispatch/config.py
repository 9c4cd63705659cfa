"""How much the dispatcher does at once and how it waits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DispatchConfig:
    per_host: int = 1  # mutating jobs at once on one host (CloudStack runs one per host)
    per_pool: int = 4  # on one storage pool, across hosts
    total: int = 16  # in the zone
    # Pending jobs a pass takes in beyond those in hand; each waits for its host's place as a
    # small task (about 20 kB), so a zone's whole run is taken in at once (bench/fanout).
    batch: int = 10000
    poll_interval: float = 5.0  # seconds between passes of `Dispatcher.run`
    call_timeout: float = 30.0  # each agent call's deadline (less when the job has less left)
    health_interval: float = 30.0  # a healthy agent is checked again after this long
    health_retry: float = 5.0  # an unhealthy one this often; it gets no work until it answers
    # CloudStack's state is read again before each job is sent, unless a read this recent is
    # at hand (one read serves the jobs that start together, not one read per job).
    fresh_within: float = 2.0
    skip_delay: float = 30.0  # a job skipped (busy volume, host not Up) is looked at again then
    backoff_base: float = 2.0  # after a transient failure: base * 2^(n-1) seconds ...
    backoff_max: float = 120.0  # ... up to this

    def __post_init__(self) -> None:
        if min(self.per_host, self.per_pool, self.total, self.batch) < 1:
            raise ValueError("dispatch limits must be at least 1")
        if min(self.call_timeout, self.poll_interval) <= 0:
            raise ValueError("dispatch intervals must be positive")
        delays = (self.backoff_base, self.backoff_max, self.skip_delay, self.health_retry)
        if min(*delays, self.fresh_within) < 0:
            raise ValueError("dispatch delays cannot be negative")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th transient failure in a row (from 1)."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, failures - 1)))
