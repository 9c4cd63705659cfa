"""The controller's store: one object holding the engine and the record sets on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from controller.store import migrate
from controller.store.engine import DEFAULT_URL, make_engine
from controller.store.intents import Intents
from controller.store.jobs import Jobs
from controller.store.leases import Leases
from controller.store.policies import Policies
from controller.store.runs import Runs


class Store:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.policies = Policies(engine)
        self.runs = Runs(engine)
        self.jobs = Jobs(engine)
        self.intents = Intents(engine)
        self.leases = Leases(engine, clock=clock)

    @classmethod
    def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        migrate_schema: bool = True,
        clock: Callable[[], float] = time.monotonic,
        **engine_options: Any,
    ) -> Store:
        """Connects to `url`, migrates the schema to this code's revision (or, with
        `migrate_schema=False`, raises SchemaMismatch unless it is there already)."""
        engine = make_engine(url, **engine_options)
        try:
            if migrate_schema:
                migrate.upgrade(engine)
            else:
                migrate.check(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
