"""A store write the dispatcher needs and the store does not have: a PENDING job that is not
to be acted on now keeps its state and attempts, records why in its `error`, and is not due
again for `delay` seconds. Fenced by the leader's lease like every leader write."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controller.store import Job, JobState, Lease, Store
from controller.store.clock import db_now_ms, ms_after
from controller.store.schema import jobs
from controller.store.tx import fenced


def defer(store: Store, lease: Lease, job_id: str, reason: str, delay: float) -> Job | None:
    """The job as deferred; None when it was no longer PENDING (claimed, finished)."""

    def work(conn: Connection) -> int:
        changed = conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == JobState.PENDING.value)
            .values(error=reason, not_before=ms_after(delay), updated_at=db_now_ms())
        )
        return int(changed.rowcount)

    if fenced(store.engine, lease, work) != 1:
        return None
    return store.jobs.get(job_id)
