"""Schema migrations with Alembic, run from code (no alembic.ini): `upgrade` brings a database
to this code's revision, `check` refuses one that is not there.

Several controllers may start at once on one MariaDB: the upgrade runs under a named lock
(GET_LOCK), and for SQLite under an flock on a file beside the database, so one migrates and
the others find the work done. MariaDB commits each DDL statement by itself: a migration cut
off half-way is finished by the next run only if its steps are written to be repeated.

A new revision: `python -c 'from controller.store.migrate import revision; revision("URL", "what
changed")'` against a database at head writes the difference between `schema.py` and it into
migrations/versions/, to read and edit before it is committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from controller.store.engine import is_mysql, is_sqlite, make_engine
from controller.store.errors import SchemaMismatch, StoreUnavailable
from controller.store.tx import unavailable_as_store_error

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_NAME = "hostsnap_controller_schema"
LOCK_TIMEOUT = 120  # seconds to wait for another controller's migration


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def head() -> str:
    """The revision this code is written for."""
    current = ScriptDirectory.from_config(_config()).get_current_head()
    assert current is not None
    return current


def current(engine: Engine) -> str | None:
    """The database's revision; None for a database never migrated."""
    with unavailable_as_store_error(), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _exclusive(engine: Engine, conn: Connection) -> Iterator[None]:
    if is_mysql(engine):
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT},
        ).scalar()
        conn.commit()
        if got != 1:
            raise StoreUnavailable(f"another controller held the schema lock {LOCK_TIMEOUT} s")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
            conn.commit()
    elif is_sqlite(engine):
        database = engine.url.database
        assert database
        with open(f"{database}-migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    else:
        raise ValueError(f"no migration lock for {engine.dialect.name}")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrates the database to `revision` (this code's by default)."""
    with unavailable_as_store_error(), engine.connect() as conn, _exclusive(engine, conn):
        before = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
        try:
            with conn.begin():
                command.upgrade(_config(conn), revision)
        except CommandError as e:  # e.g. a revision from a newer controller
            raise SchemaMismatch(
                f"the controller database at revision {before} cannot be migrated: {e}"
            ) from e
        after = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
    if before != after:
        log.info("controller database migrated from %s to %s", before or "empty", after)


def check(engine: Engine) -> None:
    """Raises SchemaMismatch unless the database is at this code's revision."""
    found, wanted = current(engine), head()
    if found != wanted:
        raise SchemaMismatch(
            f"the controller database is at schema revision {found or 'none'}, this controller "
            f"needs {wanted}: run the migration"
        )


def revision(url: str, message: str) -> None:
    """Writes a new revision file with what `schema.py` has and the database at `url` lacks."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            command.revision(_config(conn), message=message, autogenerate=True)
    finally:
        engine.dispose()
