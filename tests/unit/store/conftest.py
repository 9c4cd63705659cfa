"""The store's behaviour tests run here on SQLite (a file per test); tests/lab/store runs the
same tests again on a real MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.store.support import open_store, store

__all__ = ["db_url", "open_store", "store"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """An empty database."""
    return f"sqlite:///{tmp_path / 'controller.db'}"
