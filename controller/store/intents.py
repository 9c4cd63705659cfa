"""Intents: a job that may change a volume's active image has one per volume, recorded with the
job before it is dispatched. The leader moves it on as it learns more (CHANGED when the agent
reports the new image, APPLIED once CloudStack's volume path says so, ABANDONED when the image
did not change); the reconcile loop looks at the open ones."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.sql.expression import ColumnElement

from controller.store.clock import db_now_ms, to_datetime
from controller.store.errors import NotFound, StaleClaim
from controller.store.records import Intent, IntentState, Lease
from controller.store.schema import intents
from controller.store.tx import fenced, in_transaction

_row = intents.c
_OPEN = (IntentState.RECORDED.value, IntentState.CHANGED.value)


def _intent(row: RowMapping) -> Intent:
    return Intent(
        id=row["id"],
        job_id=row["job_id"],
        volume_id=row["volume_id"],
        previous_path=row["previous_path"],
        new_path=row["new_path"],
        state=IntentState(row["state"]),
        error=row["error"],
        created_at=to_datetime(int(row["created_at"])),
        updated_at=to_datetime(int(row["updated_at"])),
    )


def _select(conn: Connection, *where: ColumnElement[bool]) -> list[Intent]:
    query = sa.select(intents).where(*where).order_by(_row.created_at, _row.job_id, _row.volume_id)
    return [_intent(row) for row in conn.execute(query).mappings()]


class Intents:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, intent_id: str) -> Intent:
        found = in_transaction(self._engine, lambda conn: _select(conn, _row.id == intent_id))
        if not found:
            raise NotFound(f"no intent {intent_id}")
        return found[0]

    def of_job(self, job_id: str) -> list[Intent]:
        return in_transaction(self._engine, lambda conn: _select(conn, _row.job_id == job_id))

    def open(self, volume_id: str | None = None) -> list[Intent]:
        """RECORDED and CHANGED intents, oldest first: what CloudStack may not know yet."""
        where: list[ColumnElement[bool]] = [_row.state.in_(_OPEN)]
        if volume_id is not None:
            where.append(_row.volume_id == volume_id)
        return in_transaction(self._engine, lambda conn: _select(conn, *where))

    def changed(self, lease: Lease, intent_id: str, new_path: str) -> Intent:
        """RECORDED -> CHANGED: the volume's active image is now `new_path`."""
        return self._move(
            lease,
            intent_id,
            (IntentState.RECORDED,),
            IntentState.CHANGED,
            {"new_path": new_path},
            settled=lambda i: i.state is IntentState.CHANGED and i.new_path == new_path,
        )

    def applied(self, lease: Lease, intent_id: str) -> Intent:
        """CHANGED -> APPLIED: CloudStack records the new path (updateVolume succeeded)."""
        return self._move(
            lease,
            intent_id,
            (IntentState.CHANGED,),
            IntentState.APPLIED,
            {},
            settled=lambda i: i.state is IntentState.APPLIED,
        )

    def abandoned(self, lease: Lease, intent_id: str, reason: str) -> Intent:
        """RECORDED or CHANGED -> ABANDONED: the active image is (again) `previous_path`."""
        return self._move(
            lease,
            intent_id,
            (IntentState.RECORDED, IntentState.CHANGED),
            IntentState.ABANDONED,
            {"error": reason},
            settled=lambda i: i.state is IntentState.ABANDONED,
        )

    def _move(
        self,
        lease: Lease,
        intent_id: str,
        sources: tuple[IntentState, ...],
        target: IntentState,
        values: dict[str, object],
        settled: Callable[[Intent], bool],
    ) -> Intent:
        def work(conn: Connection) -> Intent:
            moved = conn.execute(
                sa.update(intents)
                .where(_row.id == intent_id, _row.state.in_([s.value for s in sources]))
                .values(**values, state=target.value, updated_at=db_now_ms())
            )
            found = _select(conn, _row.id == intent_id)
            if not found:
                raise NotFound(f"no intent {intent_id}")
            if moved.rowcount != 1 and not settled(found[0]):
                raise StaleClaim(f"intent {intent_id} is {found[0].state}, not {target}-able")
            return found[0]

        return fenced(self._engine, lease, work)
