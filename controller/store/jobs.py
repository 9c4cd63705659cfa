"""Jobs sent to agents, and the exactly-once dispatch protocol.

A job is created PENDING with an idempotency key (and, in the same transaction, the intents
of the volumes whose active image it may change). The leader then:

1. claims it: PENDING -> DISPATCHING with its epoch, by a conditional UPDATE inside a fenced
   transaction (`tx.fenced`), so of two controllers, or two workers of one, exactly one
   gets it, and only while its lease holds;
2. checks `LeaderElection.leader()` and sends the request with the job's idempotency key;
3. records the agent's job id: DISPATCHING -> RUNNING, again only for its own epoch;
4. finishes it from what the agent reports.

A leader that dies after 2 leaves the job DISPATCHING under its epoch. The next leader
`adopt`s it (moves it to its own epoch) and sends it again with the same key: the agent
answers with the job it already has, so the agent runs it once. A failed send that the agent
never accepted goes back to PENDING (`requeue`) until `max_attempts`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Collection
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement

from controller.store.clock import db_now_ms, ms_after, to_datetime
from controller.store.errors import Conflict, NotFound, StaleClaim
from controller.store.records import IntentState, Job, JobKind, JobSpec, JobState, Lease
from controller.store.schema import intents, jobs
from controller.store.tx import fenced, in_transaction

log = logging.getLogger(__name__)

_row = jobs.c
IN_FLIGHT = (JobState.DISPATCHING.value, JobState.RUNNING.value)
FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def _job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        run_id=row["run_id"],
        kind=JobKind(row["kind"]),
        host_id=row["host_id"],
        vm_id=row["vm_id"],
        volume_id=row["volume_id"],
        params=MappingProxyType(json.loads(row["params"])),
        idempotency_key=row["idempotency_key"],
        state=JobState(row["state"]),
        agent_job_id=row["agent_job_id"],
        epoch=None if row["epoch"] is None else int(row["epoch"]),
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        not_before=to_datetime(int(row["not_before"])),
        deadline=to_datetime(int(row["deadline"])),
        error=row["error"],
        created_at=to_datetime(int(row["created_at"])),
        updated_at=to_datetime(int(row["updated_at"])),
    )


def _select(conn: Connection, *where: ColumnElement[bool], limit: int | None = None) -> list[Job]:
    query = sa.select(jobs).where(*where).order_by(_row.seq).limit(limit)
    return [_job(row) for row in conn.execute(query).mappings()]


def _one(conn: Connection, job_id: str) -> Job:
    found = _select(conn, _row.id == job_id)
    if not found:
        raise NotFound(f"no job {job_id}")
    return found[0]


def _same_job(job: Job, spec: JobSpec) -> Job:
    asked = (spec.kind, spec.host_id, spec.vm_id, spec.volume_id, dict(spec.params), spec.run_id)
    held = (job.kind, job.host_id, job.vm_id, job.volume_id, dict(job.params), job.run_id)
    if asked != held:
        raise Conflict(f"idempotency key {job.idempotency_key!r} is job {job.id}, another job")
    return job


class Jobs:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, spec: JobSpec) -> Job:
        """Creates the job PENDING with its intents; the same idempotency key again returns the
        job made the first time (Conflict if it was made for something else)."""
        job_id = str(uuid.uuid4())
        key = spec.idempotency_key or f"hostsnap-controller/{job_id}"

        def work(conn: Connection) -> Job:
            existing = _select(conn, _row.idempotency_key == key)
            if existing:
                return _same_job(existing[0], spec)
            conn.execute(
                sa.insert(jobs).values(
                    id=job_id,
                    run_id=spec.run_id,
                    kind=spec.kind.value,
                    host_id=spec.host_id,
                    vm_id=spec.vm_id,
                    volume_id=spec.volume_id,
                    params=json.dumps(dict(spec.params), sort_keys=True),
                    idempotency_key=key,
                    state=JobState.PENDING.value,
                    attempts=0,
                    max_attempts=spec.max_attempts,
                    not_before=db_now_ms(),
                    deadline=ms_after(spec.timeout),
                    created_at=db_now_ms(),
                    updated_at=db_now_ms(),
                )
            )
            for intent in spec.intents:
                conn.execute(
                    sa.insert(intents).values(
                        id=str(uuid.uuid4()),
                        job_id=job_id,
                        volume_id=intent.volume_id,
                        previous_path=intent.previous_path,
                        state=IntentState.RECORDED.value,
                        created_at=db_now_ms(),
                        updated_at=db_now_ms(),
                    )
                )
            return _one(conn, job_id)

        try:
            return in_transaction(self._engine, work)
        except IntegrityError as e:
            raced = self.by_key(key)  # made by a concurrent call with the same key
            if raced is None:
                raise Conflict(f"job not created: {e.orig}") from e
            return _same_job(raced, spec)

    def get(self, job_id: str) -> Job:
        return in_transaction(self._engine, lambda conn: _one(conn, job_id))

    def by_key(self, idempotency_key: str) -> Job | None:
        found = in_transaction(
            self._engine, lambda conn: _select(conn, _row.idempotency_key == idempotency_key)
        )
        return found[0] if found else None

    def find(
        self,
        *,
        states: Collection[JobState] = (),
        run_id: str | None = None,
        host_id: str | None = None,
        limit: int | None = None,
        kinds: Collection[JobKind] = (),
    ) -> list[Job]:
        """Jobs oldest first, of the given states and kinds (all when empty), run and host."""
        where: list[ColumnElement[bool]] = []
        if states:
            where.append(_row.state.in_([s.value for s in states]))
        if kinds:
            where.append(_row.kind.in_([k.value for k in kinds]))
        if run_id is not None:
            where.append(_row.run_id == run_id)
        if host_id is not None:
            where.append(_row.host_id == host_id)
        return in_transaction(self._engine, lambda conn: _select(conn, *where, limit=limit))

    def count_by_state(self) -> dict[JobState, int]:
        query = sa.select(_row.state, sa.func.count()).group_by(_row.state)
        rows = in_transaction(self._engine, lambda conn: conn.execute(query).all())
        return {JobState(state): int(count) for state, count in rows}

    def overdue(self, limit: int | None = None) -> list[Job]:
        """Unfinished jobs whose deadline has passed by the database's clock."""
        return in_transaction(
            self._engine,
            lambda conn: _select(
                conn,
                _row.state.in_([JobState.PENDING.value, *IN_FLIGHT]),
                _row.deadline <= db_now_ms(),
                limit=limit,
            ),
        )

    # The leader's transitions: each one fenced by its lease and conditional on the job's state.

    def claim(self, lease: Lease, job_id: str) -> Job | None:
        """PENDING (and due) -> DISPATCHING under this lease's epoch. None when the job is not
        there to claim: another claim won, or it is not pending or not due."""
        return fenced(self._engine, lease, lambda conn: _claim(conn, lease, job_id))

    def claim_due(self, lease: Lease, limit: int = 1, host_id: str | None = None) -> list[Job]:
        """Claims up to `limit` due PENDING jobs, oldest first."""

        def work(conn: Connection) -> list[Job]:
            query = sa.select(_row.id).where(
                _row.state == JobState.PENDING.value, _row.not_before <= db_now_ms()
            )
            if host_id is not None:
                query = query.where(_row.host_id == host_id)
            due = conn.execute(query.order_by(_row.seq).limit(limit)).scalars()
            claimed = (_claim(conn, lease, job_id) for job_id in list(due))
            return [job for job in claimed if job is not None]

        return fenced(self._engine, lease, work)

    def adopt(self, lease: Lease) -> list[Job]:
        """Takes over the in-flight jobs of earlier epochs (a leader that died or lost its lease
        while they were DISPATCHING or RUNNING). A DISPATCHING one is to be sent again with its
        idempotency key; a RUNNING one watched."""

        def work(conn: Connection) -> list[Job]:
            orphaned = sa.and_(
                _row.state.in_(IN_FLIGHT),
                sa.or_(_row.epoch.is_(None), _row.epoch < lease.epoch),
            )
            ids = list(conn.execute(sa.select(_row.id).where(orphaned)).scalars())
            if not ids:
                return []
            conn.execute(
                sa.update(jobs)
                .where(orphaned, _row.id.in_(ids))
                .values(epoch=lease.epoch, updated_at=db_now_ms())
            )
            return _select(conn, _row.id.in_(ids), _row.epoch == lease.epoch)

        adopted = fenced(self._engine, lease, work)
        for job in adopted:
            log.info(
                "job %s (%s on host %s, key %s) adopted %s by epoch %d",
                job.id,
                job.kind,
                job.host_id,
                job.idempotency_key,
                job.state,
                lease.epoch,
            )
        return adopted

    def mark_running(self, lease: Lease, job_id: str, agent_job_id: str) -> Job:
        """DISPATCHING -> RUNNING: the agent accepted the job as `agent_job_id` (again: the
        same answer recorded twice is no change)."""
        return self._transition(
            lease,
            job_id,
            sa.and_(
                _row.id == job_id,
                _row.epoch == lease.epoch,
                _row.state == JobState.DISPATCHING.value,
            ),
            {"state": JobState.RUNNING.value, "agent_job_id": agent_job_id, "error": None},
            settled=lambda job: (
                (job.state, job.agent_job_id, job.epoch)
                == (JobState.RUNNING, agent_job_id, lease.epoch)
            ),
        )

    def requeue(self, lease: Lease, job_id: str, error: str, delay: float) -> Job:
        """DISPATCHING -> PENDING again in `delay` seconds, after a send the agent did not
        accept; FAILED instead when the job has had all its attempts."""
        exhausted = _row.attempts >= _row.max_attempts
        return self._transition(
            lease,
            job_id,
            sa.and_(
                _row.id == job_id,
                _row.epoch == lease.epoch,
                _row.state == JobState.DISPATCHING.value,
            ),
            {
                "state": sa.case((exhausted, JobState.FAILED.value), else_=JobState.PENDING.value),
                "not_before": ms_after(delay),
                "error": error,
            },
        )

    def defer(self, lease: Lease, job_id: str, reason: str, delay: float) -> Job | None:
        """A PENDING job not to be acted on now keeps its state and attempts, records why in
        its `error`, and is not due again for `delay` seconds. None when it is no longer
        PENDING (claimed, finished)."""

        def work(conn: Connection) -> Job | None:
            changed = conn.execute(
                sa.update(jobs)
                .where(_row.id == job_id, _row.state == JobState.PENDING.value)
                .values(error=reason, not_before=ms_after(delay), updated_at=db_now_ms())
            )
            return _one(conn, job_id) if changed.rowcount == 1 else None

        return fenced(self._engine, lease, work)

    def finish(self, lease: Lease, job_id: str, state: JobState, error: str | None = None) -> Job:
        """An in-flight job of this epoch, or a pending one, ends SUCCEEDED, FAILED or
        CANCELLED. Finishing it again the same way returns it unchanged."""
        if state not in FINAL:
            raise ValueError(f"{state} is not a final state")
        ending = sa.and_(
            _row.id == job_id,
            sa.or_(
                _row.state == JobState.PENDING.value,
                sa.and_(_row.state.in_(IN_FLIGHT), _row.epoch == lease.epoch),
            ),
        )
        return self._transition(
            lease,
            job_id,
            ending,
            {"state": state.value, "error": error},
            settled=lambda job: job.state is state,
        )

    def _transition(
        self,
        lease: Lease,
        job_id: str,
        where: ColumnElement[bool],
        values: dict[str, object],
        settled: Callable[[Job], bool] = lambda job: False,
    ) -> Job:
        """Applies `values` where `where` holds; a job already as asked (`settled`) is
        returned as it is; any other miss is a StaleClaim."""

        def work(conn: Connection) -> Job:
            changed = conn.execute(
                sa.update(jobs).where(where).values(**values, updated_at=db_now_ms())
            )
            job = _one(conn, job_id)
            if changed.rowcount != 1 and not settled(job):
                raise StaleClaim(
                    f"job {job_id} is {job.state} under epoch {job.epoch}; "
                    f"epoch {lease.epoch} cannot change it so"
                )
            return job

        return fenced(self._engine, lease, work)


def _claim(conn: Connection, lease: Lease, job_id: str) -> Job | None:
    claimed = conn.execute(
        sa.update(jobs)
        .where(
            _row.id == job_id,
            _row.state == JobState.PENDING.value,
            _row.not_before <= db_now_ms(),
        )
        .values(
            state=JobState.DISPATCHING.value,
            epoch=lease.epoch,
            attempts=_row.attempts + 1,
            updated_at=db_now_ms(),
        )
    )
    if claimed.rowcount != 1:
        return None
    log.debug("job %s claimed by %s epoch %d", job_id, lease.holder, lease.epoch)
    return _one(conn, job_id)
