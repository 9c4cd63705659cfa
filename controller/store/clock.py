"""The database's clock. Every time the store keeps (lease expiry, deadlines, creation times) is
read from the database server inside the statement that uses it, so controllers on different
machines with skewed clocks still agree on who holds the lease and which deadline has passed.

Times are kept as integer milliseconds since the Unix epoch (UTC): exact comparisons and
arithmetic that read the same on SQLite and MariaDB, with no time zone in the stored value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

if TYPE_CHECKING:
    _IntFunction = FunctionElement[int]
else:  # SQLAlchemy 1.4's classes are not generic
    _IntFunction = FunctionElement

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class db_now_ms(_IntFunction):
    """The database server's current time in ms since the epoch, as a SQL expression."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(db_now_ms, "sqlite")
def _sqlite_now(element: db_now_ms, compiler: Any, **kw: Any) -> str:
    # julianday('now') is fixed for the duration of one statement; 2440587.5 is the epoch.
    return "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"


@compiles(db_now_ms, "mysql")
@compiles(db_now_ms, "mariadb")
def _mysql_now(element: db_now_ms, compiler: Any, **kw: Any) -> str:
    # UTC_TIMESTAMP does not depend on the session's time zone (NOW() does, and repeats an
    # hour when daylight saving time ends); TIMESTAMPDIFF between two UTC values is arithmetic.
    return "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)"


@compiles(db_now_ms)
def _unsupported(element: db_now_ms, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(f"no database clock for dialect {compiler.dialect.name}")


def ms_after(seconds: float) -> ColumnElement[int]:
    """The database's time `seconds` from now, in ms."""
    return db_now_ms() + sa.literal(round(seconds * 1000), sa.BigInteger())


def to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else to_datetime(ms)


def to_ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"{when} has no time zone")
    return (when - EPOCH) // timedelta(milliseconds=1)
