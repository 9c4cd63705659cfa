"""Fixtures every store test directory uses, given a `db_url` fixture of its own: SQLite here
in tests/unit/store, a MariaDB database in tests/lab/store."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from controller.store import Store


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[..., Store]]:
    """Opens stores on the test's database (each one its own engine, as another controller
    would have), closed at the end."""
    opened: list[Store] = []

    def open_(**options: object) -> Store:
        store = Store.open(db_url, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()


DATABASE_FIXTURES = frozenset({"db_url", "open_store", "store"})
