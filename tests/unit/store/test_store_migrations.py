"""Schema migrations (Alembic) and engines: a new database gets exactly the schema the code
declares, controllers starting together migrate it once, and a database at another revision is
refused with the reason."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controller.store import SchemaMismatch, Store, StoreUnavailable, make_engine, migrate
from controller.store.clock import db_now_ms, to_datetime
from controller.store.engine import SQLITE_BUSY_TIMEOUT, use_wal
from controller.store.schema import metadata


def test_a_new_database_is_migrated_to_exactly_the_schema_the_code_declares(db_url):
    engine = make_engine(db_url)
    try:
        assert migrate.current(engine) is None
        migrate.upgrade(engine)

        assert migrate.current(engine) == migrate.head()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_migrating_a_database_at_head_changes_nothing(store):
    store.policies  # noqa: B018 - the store is open, so migrated
    before = migrate.current(store.engine)

    migrate.upgrade(store.engine)

    assert migrate.current(store.engine) == before == migrate.head()


def test_a_store_told_not_to_migrate_refuses_an_unmigrated_database(db_url):
    with pytest.raises(SchemaMismatch, match="revision none"):
        Store.open(db_url, migrate_schema=False)

    Store.open(db_url).close()
    Store.open(db_url, migrate_schema=False).close()


def test_a_database_from_a_newer_controller_is_refused_with_its_revision(store, db_url):
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'from-the-future'"))

    with pytest.raises(SchemaMismatch, match="from-the-future"):
        Store.open(db_url)
    with pytest.raises(SchemaMismatch, match="from-the-future"):
        Store.open(db_url, migrate_schema=False)


def test_controllers_starting_together_migrate_the_database_once(db_url):
    start = threading.Barrier(4)

    def open_store(_: int) -> str | None:
        start.wait()
        with Store.open(db_url) as store:
            return migrate.current(store.engine)

    with ThreadPoolExecutor(4) as pool:
        revisions = list(pool.map(open_store, range(4)))

    assert revisions == [migrate.head()] * 4


def test_connections_switching_a_new_sqlite_database_to_wal_together_all_get_it(tmp_path):
    # SQLite answers "database is locked" at once, whatever the busy timeout, to a connection
    # asking for WAL while another switches the new database to it: seen in about one round
    # of six connections in six without the wait.
    for round_ in range(60):
        path = tmp_path / f"new-{round_}.db"
        connections = [
            sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False)
            for _ in range(6)
        ]
        start = threading.Barrier(len(connections))

        def switch(conn: sqlite3.Connection, start: threading.Barrier = start) -> str:
            start.wait()
            cursor = conn.cursor()
            use_wal(cursor)
            return cursor.execute("PRAGMA journal_mode").fetchone()[0]

        with ThreadPoolExecutor(len(connections)) as pool:
            modes = list(pool.map(switch, connections))
        for conn in connections:
            conn.close()
        assert modes == ["wal"] * len(connections)


def test_the_database_clock_reads_utc_milliseconds(store):
    with store.engine.connect() as conn:
        before = datetime.now(UTC)
        now = conn.execute(sa.select(db_now_ms())).scalar_one()
        after = datetime.now(UTC)

    # The server is this machine here, so its clock agrees with ours.
    assert before.timestamp() - 1 <= to_datetime(now).timestamp() <= after.timestamp() + 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://db/hostsnap",  # not supported: its clock and locks are untested
        "mysql+mysqldb://db/hostsnap",  # MariaDB only through PyMySQL
        "sqlite://",  # in memory: every connection would get a database of its own
    ],
)
def test_databases_the_store_is_not_made_for_are_refused(url):
    with pytest.raises(ValueError):
        make_engine(url)


@pytest.mark.parametrize("where", ["sqlite", "mariadb"])
def test_a_database_that_cannot_be_reached_is_unavailable_not_a_driver_error(where, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    url = {
        "sqlite": f"sqlite:///{not_a_directory}/controller.db",
        "mariadb": "mysql+pymysql://hostsnap:x@127.0.0.1:9/hostsnap",  # nothing listens on 9
    }[where]

    with pytest.raises(StoreUnavailable):
        Store.open(url)
