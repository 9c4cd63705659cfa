"""Whether the leader still leads, asked before each write to CloudStack (store writes are
fenced by the store itself).

A `Lease` object is the lease as it was when it was handed out; the election renews it by
making new ones. Work that outlasts one renewal asks the election (`leader`) instead: it may
write while the election's current lease has the same epoch."""

from __future__ import annotations

from collections.abc import Callable

from controller.store import Lease, LeaseLost

LeaseCheck = Callable[[], None]  # raises LeaseLost when the leader no longer leads


def lease_check(
    lease: Lease,
    leader: Callable[[], Lease | None] | None,
    clock: Callable[[], float],
) -> LeaseCheck:
    def check() -> None:
        if leader is not None:
            current = leader()
            leading = current is not None and current.epoch == lease.epoch
        else:
            leading = lease.valid_at(clock())
        if not leading:
            raise LeaseLost(
                f"lease {lease.name} of {lease.holder} (epoch {lease.epoch}) ran out; "
                "not writing to CloudStack"
            )

    return check
