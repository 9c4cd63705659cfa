"""The store's behaviour tests of tests/unit/store, every one that uses a database, collected
again here, where `db_url` is a new database on a real MariaDB (conftest.py): the same
assertions hold for InnoDB's row locks, MariaDB's clock and PyMySQL's row counts."""

from __future__ import annotations

import inspect

from controller.store import Store
from tests.unit.store import (
    test_store_dispatch,
    test_store_election,
    test_store_jobs,
    test_store_leases,
    test_store_migrations,
    test_store_policies,
)
from tests.unit.store.support import DATABASE_FIXTURES

SUITE = (
    test_store_dispatch,
    test_store_election,
    test_store_jobs,
    test_store_leases,
    test_store_migrations,
    test_store_policies,
)

for _module in SUITE:
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and DATABASE_FIXTURES & set(
            inspect.signature(_test).parameters
        ):
            assert _name not in globals(), f"two store tests named {_name}"
            globals()[_name] = _test


def test_mariadb_urls_of_either_dialect_name_work(mariadb_url):
    mariadb_dialect_url = mariadb_url.replace("mysql+pymysql://", "mariadb+pymysql://", 1)
    with Store.open(mariadb_dialect_url) as store:
        lease = store.leases.acquire("controller", "a", duration=30)
        assert lease is not None and store.leases.info("controller").remaining > 29
