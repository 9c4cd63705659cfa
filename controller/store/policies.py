"""Snapshot policies (controller.policies.Policy) as rows: one in `policies`, and one in
`policy_selectors` per value the policy's selector names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from controller.policies import IntervalType, Policy, Quiesce, Schedule, Selector, TagMatch
from controller.store.clock import db_now_ms, to_datetime
from controller.store.errors import Conflict, NotFound
from controller.store.schema import policies, policy_selectors, runs
from controller.store.tx import in_transaction

_row = policies.c
_sel = policy_selectors.c

# policy_selectors.kind of each field of Selector but its tags (kind "tag").
_KINDS = {"vms": "vm", "volumes": "volume", "accounts": "account", "domains": "domain"}


def _columns(policy: Policy) -> dict[str, object]:
    schedule = policy.schedule
    return {
        "name": policy.name,
        "enabled": policy.enabled,
        "max_snaps": policy.max_snaps,
        "quiesce": policy.quiesce.value,
        "schedule_kind": "cron" if schedule.interval_type is None else "interval",
        "interval_type": None if schedule.interval_type is None else schedule.interval_type.value,
        "schedule": schedule.expression,
        "timezone": schedule.timezone,
        "updated_at": db_now_ms(),
    }


def _schedule(row: RowMapping) -> Schedule:
    if row["schedule_kind"] == "cron":
        return Schedule.cron(row["schedule"], row["timezone"])
    return Schedule.cloudstack(IntervalType(row["interval_type"]), row["schedule"], row["timezone"])


def _insert_selector(conn: Connection, policy_id: str, selector: Selector) -> None:
    rows = [
        {"kind": kind, "tag_key": "", "value": value}
        for field, kind in _KINDS.items()
        for value in getattr(selector, field)
    ]
    rows += [{"kind": "tag", "tag_key": t.key, "value": t.value} for t in selector.tags]
    conn.execute(sa.insert(policy_selectors), [{"policy_id": policy_id, **r} for r in rows])


def _selector(rows: Sequence[RowMapping]) -> Selector:
    def values(kind: str) -> tuple[str, ...]:
        return tuple(r["value"] for r in rows if r["kind"] == kind)

    tags = tuple(TagMatch(r["tag_key"], r["value"]) for r in rows if r["kind"] == "tag")
    return Selector(tags=tags, **{field: values(kind) for field, kind in _KINDS.items()})


def _select(conn: Connection, *where: ColumnElement[bool]) -> list[Policy]:
    rows = list(conn.execute(sa.select(policies).where(*where).order_by(_row.name)).mappings())
    selectors: dict[str, list[RowMapping]] = {row["id"]: [] for row in rows}
    if rows:
        query = (
            sa.select(policy_selectors).where(_sel.policy_id.in_(list(selectors))).order_by(_sel.id)
        )
        for s in conn.execute(query).mappings():
            selectors[s["policy_id"]].append(s)
    return [
        Policy(
            id=row["id"],
            name=row["name"],
            schedule=_schedule(row),
            max_snaps=int(row["max_snaps"]),
            selector=_selector(selectors[row["id"]]),
            quiesce=Quiesce(row["quiesce"]),
            enabled=bool(row["enabled"]),
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

    def create(self, policy: Policy) -> Policy:
        def work(conn: Connection) -> Policy:
            conn.execute(
                sa.insert(policies).values(id=policy.id, created_at=db_now_ms(), **_columns(policy))
            )
            _insert_selector(conn, policy.id, policy.selector)
            return _one(conn, policy.id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raise Conflict(f"a policy named {policy.name!r} or with id {policy.id} exists") from e

    def get(self, policy_id: str) -> Policy:
        return in_transaction(self._engine, lambda conn: _one(conn, policy_id))

    def by_name(self, name: str) -> Policy | None:
        found = in_transaction(self._engine, lambda conn: _select(conn, _row.name == name))
        return found[0] if found else None

    def all(self, *, enabled: bool | None = None) -> list[Policy]:
        """Policies by name; only the enabled (or disabled) ones when `enabled` is given."""
        where = [] if enabled is None else [_row.enabled == enabled]
        return in_transaction(self._engine, lambda conn: _select(conn, *where))

    def created_at(self, policy_id: str) -> datetime:
        """When the policy was created, by the database's clock."""

        def work(conn: Connection) -> datetime:
            found = conn.execute(sa.select(_row.created_at).where(_row.id == policy_id)).scalar()
            if found is None:
                raise NotFound(f"no policy {policy_id}")
            return to_datetime(int(found))

        return in_transaction(self._engine, work)

    def update(self, policy: Policy) -> Policy:
        """Replaces the settings and selector of the policy with `policy`'s id by `policy`'s."""

        def work(conn: Connection) -> Policy:
            changed = conn.execute(
                sa.update(policies).where(_row.id == policy.id).values(**_columns(policy))
            )
            if changed.rowcount != 1:
                raise NotFound(f"no policy {policy.id}")
            conn.execute(sa.delete(policy_selectors).where(_sel.policy_id == policy.id))
            _insert_selector(conn, policy.id, policy.selector)
            return _one(conn, policy.id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raise Conflict(f"a policy named {policy.name!r} exists") from e

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
