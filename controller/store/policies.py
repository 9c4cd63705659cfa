"""Snapshot policies as rows: one in `policies`, and one in `policy_selectors` per value the
policy's selector names.

What comes out is a StoredPolicy: the rows as they are, with the controller.policies.Policy
they make, or why they no longer make one (a time zone this system no longer knows, a cron
expression the planner does not read, ...). Such a policy is still listed, and can be
deleted; it is not planned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from controller.policies import (
    IntervalType,
    Policy,
    PolicyError,
    Quiesce,
    Schedule,
    ScheduleError,
    SelectionError,
    Selector,
    TagMatch,
)
from controller.store.clock import db_now_ms, to_datetime
from controller.store.errors import Conflict, NotFound
from controller.store.schema import policies, policy_selectors, runs
from controller.store.tx import in_transaction

_row = policies.c
_sel = policy_selectors.c

# policy_selectors.kind of each field of Selector but its tags (kind "tag"). Selector.domains
# has none: no command or API makes such a selector, and the store refuses to keep one.
_KINDS = {"vms": "vm", "volumes": "volume", "accounts": "account"}


@dataclass(frozen=True)
class SelectorRow:
    kind: str  # vm | volume | tag | account
    value: str
    key: str = ""  # a tag's key


@dataclass(frozen=True)
class StoredPolicy:
    """A policy's rows as they are, unchecked; `policy` is what they make, None when they no
    longer make one, and `problem` then says why."""

    id: str
    name: str
    enabled: bool
    max_snaps: int
    quiesce: str
    backup_target: str | None
    keep_backups: int | None
    schedule_kind: str  # interval (CloudStack's form) | cron
    interval_type: str | None  # interval only
    schedule: str  # CloudStack's `schedule` (e.g. "30:02") or the cron expression
    timezone: str
    selectors: tuple[SelectorRow, ...]  # in the order they were written
    created_at: datetime
    updated_at: datetime
    policy: Policy | None
    problem: str = ""

    def usable(self) -> Policy:
        """The policy; PolicyError says why the rows no longer make one."""
        if self.policy is None:
            raise PolicyError(self.problem)
        return self.policy


def _columns(policy: Policy) -> dict[str, object]:
    schedule = policy.schedule
    return {
        "name": policy.name,
        "enabled": policy.enabled,
        "max_snaps": policy.max_snaps,
        "quiesce": policy.quiesce.value,
        "backup_target": policy.backup_target,
        "keep_backups": policy.keep_backups,
        "schedule_kind": "cron" if schedule.interval_type is None else "interval",
        "interval_type": None if schedule.interval_type is None else schedule.interval_type.value,
        "schedule": schedule.expression,
        "timezone": schedule.timezone,
        "updated_at": db_now_ms(),
    }


def _insert_selector(conn: Connection, policy_id: str, selector: Selector) -> None:
    if selector.domains:
        raise SelectionError("the store keeps no selector of domains")
    rows = [
        *(("vm", "", v) for v in selector.vms),
        *(("volume", "", v) for v in selector.volumes),
        *(("tag", t.key, t.value) for t in selector.tags),
        *(("account", "", v) for v in selector.accounts),
    ]
    conn.execute(
        sa.insert(policy_selectors),
        [{"policy_id": policy_id, "kind": k, "tag_key": key, "value": v} for k, key, v in rows],
    )


def _policy(row: RowMapping, selectors: Sequence[SelectorRow]) -> Policy:
    """Raises PolicyError when the rows do not make a policy."""
    if row["schedule_kind"] == "cron":
        schedule = Schedule.cron(row["schedule"], row["timezone"])
    elif row["schedule_kind"] == "interval":
        interval = IntervalType.parse(str(row["interval_type"]))
        schedule = Schedule.cloudstack(interval, row["schedule"], row["timezone"])
    else:
        raise ScheduleError(f"schedule kind {row['schedule_kind']!r}: interval or cron")
    unknown = sorted({s.kind for s in selectors} - {"tag", *_KINDS.values()})
    if unknown:
        raise SelectionError(f"selector kind {unknown[0]!r}: vm, volume, tag or account")
    selector = Selector(
        tags=tuple(TagMatch(s.key, s.value) for s in selectors if s.kind == "tag"),
        **{
            field: tuple(s.value for s in selectors if s.kind == kind)
            for field, kind in _KINDS.items()
        },
    )
    return Policy(
        id=row["id"],
        name=row["name"],
        schedule=schedule,
        max_snaps=int(row["max_snaps"]),
        selector=selector,
        quiesce=Quiesce.parse(row["quiesce"]),
        enabled=bool(row["enabled"]),
        backup_target=row["backup_target"],
        keep_backups=row["keep_backups"],
    )


def _stored(row: RowMapping, selectors: Sequence[SelectorRow]) -> StoredPolicy:
    policy, problem = None, ""
    try:
        policy = _policy(row, selectors)
    except PolicyError as e:
        problem = str(e)
    return StoredPolicy(
        id=row["id"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        max_snaps=int(row["max_snaps"]),
        quiesce=row["quiesce"],
        backup_target=row["backup_target"],
        keep_backups=row["keep_backups"],
        schedule_kind=row["schedule_kind"],
        interval_type=row["interval_type"],
        schedule=row["schedule"],
        timezone=row["timezone"],
        selectors=tuple(selectors),
        created_at=to_datetime(int(row["created_at"])),
        updated_at=to_datetime(int(row["updated_at"])),
        policy=policy,
        problem=problem,
    )


def _select(conn: Connection, *where: ColumnElement[bool]) -> list[StoredPolicy]:
    rows = list(conn.execute(sa.select(policies).where(*where).order_by(_row.name)).mappings())
    selectors: dict[str, list[SelectorRow]] = {row["id"]: [] for row in rows}
    if rows:
        query = (
            sa.select(policy_selectors).where(_sel.policy_id.in_(list(selectors))).order_by(_sel.id)
        )
        for s in conn.execute(query).mappings():
            selectors[s["policy_id"]].append(SelectorRow(s["kind"], s["value"], s["tag_key"]))
    return [_stored(row, selectors[row["id"]]) for row in rows]


def _one(conn: Connection, policy_id: str) -> StoredPolicy:
    found = _select(conn, _row.id == policy_id)
    if not found:
        raise NotFound(f"no policy {policy_id}")
    return found[0]


class Policies:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, policy: Policy) -> StoredPolicy:
        def work(conn: Connection) -> StoredPolicy:
            conn.execute(
                sa.insert(policies).values(id=policy.id, created_at=db_now_ms(), **_columns(policy))
            )
            _insert_selector(conn, policy.id, policy.selector)
            return _one(conn, policy.id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raise self._conflict(policy) from e

    def get(self, policy_id: str) -> StoredPolicy:
        return in_transaction(self._engine, lambda conn: _one(conn, policy_id))

    def by_name(self, name: str) -> StoredPolicy | None:
        found = in_transaction(self._engine, lambda conn: _select(conn, _row.name == name))
        return found[0] if found else None

    def all(self, *, enabled: bool | None = None) -> list[StoredPolicy]:
        """Policies by name; only the enabled (or disabled) ones when `enabled` is given."""
        where = [] if enabled is None else [_row.enabled == enabled]
        return in_transaction(self._engine, lambda conn: _select(conn, *where))

    def update(self, policy: Policy) -> StoredPolicy:
        """Replaces the settings and selector of the policy with `policy`'s id by `policy`'s."""

        def work(conn: Connection) -> StoredPolicy:
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
            raise self._conflict(policy) from e

    def _conflict(self, policy: Policy) -> Conflict:
        named = self.by_name(policy.name)
        if named is None or named.id == policy.id:
            return Conflict(f"a policy with id {policy.id} exists")
        return Conflict(f"a policy named {policy.name!r} exists")

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
