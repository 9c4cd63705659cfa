"""The store on a real MariaDB: a private mariadbd (Debian's mariadb-server, installed when
missing) started once per session, a new database per test. If MariaDB cannot start, every
test here fails with the reason; none is skipped. The lab itself (libvirt, Ceph) is not
needed and not brought up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mariadb.server import MariaDB, start
from tests.unit.store.support import open_store, store

__all__ = ["db_url", "mariadb", "mariadb_url", "open_store", "store"]


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    try:
        server = start(tmp_path_factory.mktemp("mariadb"))
    except Exception as e:  # the reason every MariaDB test fails
        pytest.fail(f"MariaDB did not start: {type(e).__name__}: {e}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def mariadb_url(mariadb: MariaDB) -> Iterator[str]:
    """A new, empty database on the session's server, dropped afterwards."""
    name = mariadb.create_database()
    yield mariadb.url(name)
    mariadb.drop_database(name)


@pytest.fixture
def db_url(mariadb_url: str) -> str:
    return mariadb_url
