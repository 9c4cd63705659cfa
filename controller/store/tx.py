"""Transactions: each store call is one short transaction run by `in_transaction`, retried when
the database gave up on it for locking (a MariaDB deadlock or lock wait timeout, or SQLite busy
past its timeout), with driver errors turned into the store's own.

`fenced` runs a transaction only while the caller still holds the leader lease with its epoch:
its first statement is a conditional UPDATE of the lease row that matches only that holder and
epoch and an expiry still in the future by the database's clock. That row stays locked until
the commit (row lock on MariaDB, the write lock on SQLite), so the lease cannot change hands in
the middle: every write inside is made by the leader of that epoch, or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from controller.store.clock import db_now_ms
from controller.store.errors import LeaseLost, StoreUnavailable
from controller.store.records import Lease
from controller.store.schema import leases

log = logging.getLogger(__name__)

T = TypeVar("T")

# MariaDB: 1205 lock wait timeout, 1213 deadlock; the transaction was rolled back whole.
_MYSQL_RETRYABLE = frozenset({1205, 1213})
ATTEMPTS = 4


def _retryable(error: DBAPIError) -> bool:
    args = getattr(error.orig, "args", ())
    code = args[0] if args else None
    if isinstance(code, int) and code in _MYSQL_RETRYABLE:
        return True
    return "database is locked" in str(error.orig)


@contextlib.contextmanager
def unavailable_as_store_error() -> Iterator[None]:
    """Turns "cannot reach or open the database" into StoreUnavailable."""
    try:
        yield
    except OperationalError as e:
        raise StoreUnavailable(f"the controller database: {e.orig}") from e


def in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Runs `work` in one transaction and commits; integrity errors reach the caller as they are
    (the caller knows which constraint means what)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except IntegrityError:
            raise
        except DBAPIError as e:
            if _retryable(e) and attempt < ATTEMPTS:
                log.warning("transaction rolled back by the database (%s); again", e.orig)
                time.sleep(0.05 * attempt)
                continue
            if isinstance(e, OperationalError) or e.connection_invalidated:
                raise StoreUnavailable(f"the controller database: {e.orig}") from e
            raise
    raise AssertionError("unreachable")


def hold(conn: Connection, lease: Lease) -> None:
    """Checks, and keeps until the commit, that `lease` is still the leader's; else LeaseLost."""
    row = leases.c
    checked = conn.execute(
        sa.update(leases)
        .where(
            row.name == lease.name,
            row.holder == lease.holder,
            row.epoch == lease.epoch,
            row.expires_at > db_now_ms(),
        )
        .values(holder=row.holder)
    )
    if checked.rowcount != 1:
        raise LeaseLost(f"{lease.holder} no longer holds lease {lease.name!r} epoch {lease.epoch}")


def fenced(engine: Engine, lease: Lease, work: Callable[[Connection], T]) -> T:
    """Runs `work` in one transaction that commits only while `lease` leads (see above)."""

    def guarded(conn: Connection) -> T:
        hold(conn, lease)
        return work(conn)

    return in_transaction(engine, guarded)
