"""The leader lease: one row per lease name with its holder, epoch and expiry.

Every change is one conditional UPDATE evaluated with the database's clock:
- acquire: free, expired or already ours -> ours, epoch + 1, expires in `duration`;
- renew: ours with this epoch and not yet expired -> expires in `duration` from now;
- release: ours with this epoch -> free now (the epoch stays: epochs are never reused).

The caller learns when to stop acting from its own monotonic clock: `valid_until` is the time
just before the statement was sent plus `duration` minus `margin`. The database set the expiry
no earlier than that send, so the holder stops before the database lets anyone else in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from controller.store.clock import db_now_ms, ms_after, to_datetime
from controller.store.errors import LeaseLost
from controller.store.records import Lease, LeaseInfo
from controller.store.schema import leases
from controller.store.tx import in_transaction

log = logging.getLogger(__name__)

_row = leases.c


class Leases:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock

    def acquire(self, name: str, holder: str, duration: float, margin: float = 0.0) -> Lease | None:
        """Takes the lease if nobody holds it (or it expired, or `holder` has it already) and
        returns it with a new epoch; None while another holder's lease runs."""
        _check(duration, margin)

        def attempt(conn: Connection) -> Lease | None:
            sent = self._clock()
            taken = conn.execute(
                sa.update(leases)
                .where(
                    _row.name == name,
                    sa.or_(
                        _row.holder.is_(None),
                        _row.expires_at <= db_now_ms(),
                        _row.holder == holder,
                    ),
                )
                .values(
                    holder=holder,
                    epoch=_row.epoch + 1,
                    acquired_at=db_now_ms(),
                    renewed_at=db_now_ms(),
                    expires_at=ms_after(duration),
                )
            )
            if taken.rowcount == 0:
                if _read(conn, name) is not None:
                    return None
                conn.execute(
                    sa.insert(leases).values(
                        name=name,
                        holder=holder,
                        epoch=1,
                        acquired_at=db_now_ms(),
                        renewed_at=db_now_ms(),
                        expires_at=ms_after(duration),
                    )
                )
            row = _read(conn, name)
            assert row is not None
            return Lease(name, holder, int(row["epoch"]), sent + duration - margin)

        try:
            lease = in_transaction(self._engine, attempt)
        except IntegrityError:  # another controller made the row first: its lease now
            return None
        if lease is not None:
            log.info("lease %r acquired by %s, epoch %d", name, holder, lease.epoch)
        return lease

    def renew(self, lease: Lease, duration: float, margin: float = 0.0) -> Lease:
        """Extends the lease by `duration` from now; LeaseLost if it is not ours any more."""
        _check(duration, margin)

        def attempt(conn: Connection) -> Lease:
            sent = self._clock()
            renewed = conn.execute(
                sa.update(leases)
                .where(
                    _row.name == lease.name,
                    _row.holder == lease.holder,
                    _row.epoch == lease.epoch,
                    _row.expires_at > db_now_ms(),
                )
                .values(renewed_at=db_now_ms(), expires_at=ms_after(duration))
            )
            if renewed.rowcount != 1:
                raise LeaseLost(
                    f"{lease.holder} lost lease {lease.name!r} epoch {lease.epoch} before renewal"
                )
            return Lease(lease.name, lease.holder, lease.epoch, sent + duration - margin)

        return in_transaction(self._engine, attempt)

    def release(self, lease: Lease) -> bool:
        """Gives the lease up at once so a follower need not wait for it to expire."""

        def attempt(conn: Connection) -> bool:
            released = conn.execute(
                sa.update(leases)
                .where(
                    _row.name == lease.name,
                    _row.holder == lease.holder,
                    _row.epoch == lease.epoch,
                )
                .values(holder=None, expires_at=db_now_ms())
            )
            return released.rowcount == 1

        done = in_transaction(self._engine, attempt)
        if done:
            log.info("lease %r released by %s, epoch %d", lease.name, lease.holder, lease.epoch)
        return done

    def info(self, name: str) -> LeaseInfo | None:
        """The lease as the database has it now, or None if it was never taken."""

        def read(conn: Connection) -> LeaseInfo | None:
            row = (
                conn.execute(
                    sa.select(
                        _row.holder,
                        _row.epoch,
                        _row.expires_at,
                        (_row.expires_at - db_now_ms()).label("remaining"),
                    ).where(_row.name == name)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            return LeaseInfo(
                name=name,
                holder=row["holder"],
                epoch=int(row["epoch"]),
                expires_at=to_datetime(int(row["expires_at"])),
                remaining=int(row["remaining"]) / 1000,
            )

        return in_transaction(self._engine, read)


def _read(conn: Connection, name: str) -> RowMapping | None:
    return conn.execute(sa.select(_row.epoch).where(_row.name == name)).mappings().first()


def _check(duration: float, margin: float) -> None:
    if duration <= 0 or not 0 <= margin < duration:
        raise ValueError(f"lease duration {duration} s and margin {margin} s do not fit")
