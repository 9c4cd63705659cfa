"""Engines from a URL: SQLite (a file, the default, for one controller) or MariaDB/MySQL through
PyMySQL (for several controllers sharing one database). Nothing else is supported: the store
relies on each one's clock function, locking and row counts, and is tested on these two."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

DEFAULT_URL = "sqlite:////var/lib/hostsnap-controller/controller.db"
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one before giving up


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_mysql(engine: Engine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers do not wait for the writer; foreign keys are off by default in SQLite.
        use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def use_wal(cursor: Any) -> None:
    """While another connection switches a new database to WAL, SQLite answers "database is
    locked" at once, without waiting its busy timeout (controllers, or one controller's pool,
    opening a new database together): wait for it here."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def make_engine(url: str = DEFAULT_URL, **options: Any) -> Engine:
    """An engine for `url`: sqlite:///PATH, or mysql+pymysql://USER:PASSWORD@HOST[:PORT]/DB
    (mariadb+pymysql:// too). Extra keyword arguments go to `sqlalchemy.create_engine`."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database is one per connection: give a file")
        options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        engine = sa.create_engine(parsed, future=True, **options)
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if backend in ("mysql", "mariadb"):
        if driver != "pymysql":
            raise ValueError(f"{url!r}: MariaDB/MySQL is reached through PyMySQL (+pymysql)")
        connect_args = options.setdefault("connect_args", {})
        connect_args.setdefault("charset", "utf8mb4")
        connect_args.setdefault("connect_timeout", 10)
        # A statement never hangs longer than this: the lease keeper must get its answer (or
        # an error) while there is still time to stop acting.
        connect_args.setdefault("read_timeout", 30)
        connect_args.setdefault("write_timeout", 30)
        # A connection MariaDB dropped (wait_timeout, a restart) is replaced, not handed out.
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_recycle", 3600)
        return sa.create_engine(parsed, future=True, **options)
    raise ValueError(f"{url!r}: the store runs on sqlite or mysql/mariadb (+pymysql)")
