"""Snapshot policies and what each selects."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from controller.store.clock import db_now_ms, to_datetime
from controller.store.errors import Conflict, NotFound
from controller.store.policy import (
    CronSchedule,
    IntervalSchedule,
    IntervalType,
    Policy,
    PolicySpec,
    Quiesce,
    Schedule,
    Selector,
    SelectorKind,
)
from controller.store.schema import policies, policy_selectors, runs
from controller.store.tx import in_transaction

_row = policies.c
_sel = policy_selectors.c


def _schedule_columns(schedule: Schedule) -> dict[str, object]:
    if isinstance(schedule, IntervalSchedule):
        return {
            "schedule_kind": "interval",
            "interval_type": schedule.interval_type.value,
            "schedule": schedule.schedule,
            "timezone": schedule.timezone,
        }
    return {
        "schedule_kind": "cron",
        "interval_type": None,
        "schedule": schedule.expression,
        "timezone": schedule.timezone,
    }


def _schedule(row: RowMapping) -> Schedule:
    if row["schedule_kind"] == "cron":
        return CronSchedule(row["schedule"], row["timezone"])
    return IntervalSchedule(IntervalType(row["interval_type"]), row["schedule"], row["timezone"])


def _columns(spec: PolicySpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "enabled": spec.enabled,
        "max_snaps": spec.max_snaps,
        "quiesce": spec.quiesce.value,
        **_schedule_columns(spec.schedule),
        "updated_at": db_now_ms(),
    }


def _insert_selectors(conn: Connection, policy_id: str, selectors: Sequence[Selector]) -> None:
    if selectors:
        conn.execute(
            sa.insert(policy_selectors),
            [
                {"policy_id": policy_id, "kind": s.kind.value, "tag_key": s.key, "value": s.value}
                for s in selectors
            ],
        )


def _select(conn: Connection, *where: ColumnElement[bool]) -> list[Policy]:
    rows = list(conn.execute(sa.select(policies).where(*where).order_by(_row.name)).mappings())
    selectors: dict[str, list[Selector]] = {row["id"]: [] for row in rows}
    if rows:
        query = (
            sa.select(policy_selectors).where(_sel.policy_id.in_(list(selectors))).order_by(_sel.id)
        )
        for s in conn.execute(query).mappings():
            selectors[s["policy_id"]].append(
                Selector(SelectorKind(s["kind"]), s["value"], s["tag_key"])
            )
    return [
        Policy(
            id=row["id"],
            name=row["name"],
            schedule=_schedule(row),
            max_snaps=int(row["max_snaps"]),
            quiesce=Quiesce(row["quiesce"]),
            selectors=tuple(selectors[row["id"]]),
            enabled=bool(row["enabled"]),
            created_at=to_datetime(int(row["created_at"])),
            updated_at=to_datetime(int(row["updated_at"])),
        )
        for row in rows
    ]


def _one(conn: Connection, policy_id: str) -> Policy:
    found = _select(conn, _row.id == policy_id)
    if not found:
        raise NotFound(f"no policy {policy_id}")
    return found[0]


class Policies:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, spec: PolicySpec) -> Policy:
        policy_id = str(uuid.uuid4())

        def work(conn: Connection) -> Policy:
            conn.execute(
                sa.insert(policies).values(id=policy_id, created_at=db_now_ms(), **_columns(spec))
            )
            _insert_selectors(conn, policy_id, spec.selectors)
            return _one(conn, policy_id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raise Conflict(f"a policy named {spec.name!r} exists") from e

    def get(self, policy_id: str) -> Policy:
        return in_transaction(self._engine, lambda conn: _one(conn, policy_id))

    def by_name(self, name: str) -> Policy | None:
        found = in_transaction(self._engine, lambda conn: _select(conn, _row.name == name))
        return found[0] if found else None

    def all(self, *, enabled: bool | None = None) -> list[Policy]:
        """Policies by name; only the enabled (or disabled) ones when `enabled` is given."""
        where = [] if enabled is None else [_row.enabled == enabled]
        return in_transaction(self._engine, lambda conn: _select(conn, *where))

    def update(self, policy_id: str, spec: PolicySpec) -> Policy:
        """Replaces the policy's settings and selectors with `spec`'s."""

        def work(conn: Connection) -> Policy:
            changed = conn.execute(
                sa.update(policies).where(_row.id == policy_id).values(**_columns(spec))
            )
            if changed.rowcount != 1:
                raise NotFound(f"no policy {policy_id}")
            conn.execute(sa.delete(policy_selectors).where(_sel.policy_id == policy_id))
            _insert_selectors(conn, policy_id, spec.selectors)
            return _one(conn, policy_id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raise Conflict(f"a policy named {spec.name!r} exists") from e

    def delete(self, policy_id: str) -> None:
        """Deletes a policy that never ran; one with runs keeps its history: disable it."""

        def work(conn: Connection) -> None:
            ran = conn.execute(
                sa.select(sa.func.count()).select_from(runs).where(runs.c.policy_id == policy_id)
            ).scalar_one()
            if ran:
                raise Conflict(f"policy {policy_id} has {ran} runs: disable it instead")
            conn.execute(sa.delete(policy_selectors).where(_sel.policy_id == policy_id))
            gone = conn.execute(sa.delete(policies).where(_row.id == policy_id))
            if gone.rowcount != 1:
                raise NotFound(f"no policy {policy_id}")

        try:
            in_transaction(self._engine, work)
        except IntegrityError as e:  # a run was opened meanwhile
            raise Conflict(f"policy {policy_id} has runs: disable it instead") from e
