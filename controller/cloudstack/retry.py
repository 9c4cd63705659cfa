"""How long to wait before trying a transient failure again: exponential backoff, jittered."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try. Delays grow `base_delay * 2**n` up to `max_delay`;
    each is drawn from its upper half (so retries spread out but never come back at once).
    A server's Retry-After is honoured when longer, up to `max_delay`."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        wait = self.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


NO_RETRY = RetryPolicy(attempts=1)
