"""Runs: one per policy and schedule slot, however many times (or controllers) ask for it, so
opening one needs no lease; finishing one is the leader's (fenced)."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from controller.store.clock import db_now_ms, optional_datetime, to_datetime, to_ms
from controller.store.errors import NotFound, StaleClaim
from controller.store.records import Lease, Run, RunState
from controller.store.schema import runs
from controller.store.tx import fenced, in_transaction

_row = runs.c


def _run(row: RowMapping) -> Run:
    return Run(
        id=row["id"],
        policy_id=row["policy_id"],
        scheduled_for=to_datetime(int(row["scheduled_for"])),
        state=RunState(row["state"]),
        created_at=to_datetime(int(row["created_at"])),
        finished_at=optional_datetime(row["finished_at"]),
        error=row["error"],
    )


def _select(conn: Connection, *where: ColumnElement[bool], limit: int | None = None) -> list[Run]:
    query = sa.select(runs).where(*where).order_by(_row.scheduled_for.desc(), _row.id)
    return [_run(row) for row in conn.execute(query.limit(limit)).mappings()]


class Runs:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def open(self, policy_id: str, scheduled_for: datetime) -> Run:
        """The run of `policy_id` for the slot `scheduled_for`, made RUNNING if there is none."""
        slot = sa.and_(_row.policy_id == policy_id, _row.scheduled_for == to_ms(scheduled_for))

        def work(conn: Connection) -> Run:
            existing = _select(conn, slot)
            if existing:
                return existing[0]
            conn.execute(
                sa.insert(runs).values(
                    id=str(uuid.uuid4()),
                    policy_id=policy_id,
                    scheduled_for=to_ms(scheduled_for),
                    state=RunState.RUNNING.value,
                    created_at=db_now_ms(),
                )
            )
            return _select(conn, slot)[0]

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raced = in_transaction(self._engine, lambda conn: _select(conn, slot))
            if not raced:
                raise NotFound(f"no policy {policy_id}") from e
            return raced[0]

    def get(self, run_id: str) -> Run:
        found = in_transaction(self._engine, lambda conn: _select(conn, _row.id == run_id))
        if not found:
            raise NotFound(f"no run {run_id}")
        return found[0]

    def of_policy(self, policy_id: str, limit: int | None = None) -> list[Run]:
        """The policy's runs, the latest slot first."""
        return in_transaction(
            self._engine, lambda conn: _select(conn, _row.policy_id == policy_id, limit=limit)
        )

    def find(self, *, state: RunState | None = None, limit: int | None = None) -> list[Run]:
        """Runs in `state` (any when None), the latest slot first."""
        where: list[ColumnElement[bool]] = [] if state is None else [_row.state == state.value]
        return in_transaction(self._engine, lambda conn: _select(conn, *where, limit=limit))

    def finish(self, lease: Lease, run_id: str, state: RunState, error: str | None = None) -> Run:
        """RUNNING -> SUCCEEDED, PARTIAL or FAILED (finishing it the same way again is no
        change)."""
        if state is RunState.RUNNING:
            raise ValueError("a run finishes in a final state")

        def work(conn: Connection) -> Run:
            ended = conn.execute(
                sa.update(runs)
                .where(_row.id == run_id, _row.state == RunState.RUNNING.value)
                .values(state=state.value, error=error, finished_at=db_now_ms())
            )
            found = _select(conn, _row.id == run_id)
            if not found:
                raise NotFound(f"no run {run_id}")
            if ended.rowcount != 1 and found[0].state is not state:
                raise StaleClaim(f"run {run_id} already ended {found[0].state}")
            return found[0]

        return fenced(self._engine, lease, work)
