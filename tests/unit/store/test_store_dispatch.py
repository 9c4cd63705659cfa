"""Exactly-once dispatch: a job is claimed by one leader epoch through a conditional UPDATE,
recorded under that epoch only, and after a failover resent with the same idempotency key, so
the agent makes one job of it however the controllers fail."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from controller.store import JobKind, JobSpec, JobState, LeaseLost, StaleClaim
from tests.mariadb.fake_agent import FakeAgent

NAME = "controller"
SHORT = 0.4  # seconds: leases that tests let expire


def snapshot(host: str = "kvm-1", **options) -> JobSpec:
    return JobSpec(JobKind.SNAPSHOT, host, vm_id="vm-1", **options)


def test_a_claim_moves_a_pending_job_to_dispatching_under_the_leaders_epoch(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(snapshot())

    claimed = store.jobs.claim(lease, job.id)

    assert (claimed.state, claimed.epoch, claimed.attempts) == (JobState.DISPATCHING, 1, 1)
    assert store.jobs.claim(lease, job.id) is None  # claimed already


def test_workers_racing_to_claim_the_same_jobs_claim_each_exactly_once(open_store):
    stores = [open_store() for _ in range(4)]
    lease = stores[0].leases.acquire(NAME, "a", duration=30)
    created = {stores[0].jobs.create(snapshot()).id for _ in range(12)}
    start = threading.Barrier(len(stores))

    def worker(i: int) -> list[str]:
        start.wait()
        mine = []
        for job_id in sorted(created):
            if stores[i].jobs.claim(lease, job_id) is not None:
                mine.append(job_id)
        return mine

    with ThreadPoolExecutor(len(stores)) as pool:
        claims = [job_id for ids in pool.map(worker, range(len(stores))) for job_id in ids]

    assert sorted(claims) == sorted(created)


def test_claim_due_takes_the_oldest_pending_jobs_of_a_host(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    jobs = [store.jobs.create(snapshot(host)) for host in ("kvm-1", "kvm-2", "kvm-1", "kvm-1")]

    claimed = store.jobs.claim_due(lease, limit=2, host_id="kvm-1")

    assert [j.id for j in claimed] == [jobs[0].id, jobs[2].id]
    assert [j.id for j in store.jobs.find(states=[JobState.PENDING])] == [jobs[1].id, jobs[3].id]


def test_a_leader_that_lost_its_lease_can_neither_claim_nor_record_a_dispatch(store):
    job = store.jobs.create(snapshot())
    spare = store.jobs.create(snapshot())
    old = store.leases.acquire(NAME, "a", duration=SHORT, margin=0.1)
    store.jobs.claim(old, job.id)
    time.sleep(SHORT + 0.05)  # the leader paused (GC, stall, cut off) past its lease
    new = store.leases.acquire(NAME, "b", duration=30)

    assert not old.valid_at(time.monotonic())  # its own clock says: do not send
    with pytest.raises(LeaseLost):
        store.jobs.mark_running(old, job.id, "agent-job-from-old-leader")
    with pytest.raises(LeaseLost):
        store.jobs.claim(old, spare.id)
    with pytest.raises(LeaseLost):
        store.jobs.finish(old, job.id, JobState.FAILED, "stale leader")
    assert store.jobs.get(job.id).agent_job_id is None
    assert store.jobs.get(spare.id).state is JobState.PENDING
    assert new.epoch == old.epoch + 1


def test_an_expired_lease_fences_writes_even_before_anyone_takes_over(store):
    job = store.jobs.create(snapshot())
    lease = store.leases.acquire(NAME, "a", duration=SHORT)
    time.sleep(SHORT + 0.05)

    with pytest.raises(LeaseLost):
        store.jobs.claim(lease, job.id)


def test_after_failover_a_job_sent_by_the_dead_leader_is_adopted_and_the_agent_runs_it_once(
    store, tmp_path
):
    agent = FakeAgent(tmp_path / "agent.db")
    job = store.jobs.create(snapshot())
    old = store.leases.acquire(NAME, "a", duration=SHORT, margin=0.1)
    store.jobs.claim(old, job.id)
    agent.submit(job.idempotency_key, "a")  # sent; then the leader died before recording it
    time.sleep(SHORT + 0.05)
    new = store.leases.acquire(NAME, "b", duration=30)

    adopted = store.jobs.adopt(new)
    assert [(j.id, j.state, j.epoch) for j in adopted] == [(job.id, JobState.DISPATCHING, 2)]
    agent_job = agent.submit(adopted[0].idempotency_key, "b")  # sent again, same key
    running = store.jobs.mark_running(new, job.id, agent_job)

    assert running.state is JobState.RUNNING and running.agent_job_id == agent_job
    assert agent.jobs() == {job.idempotency_key: agent_job}  # one agent job, two sends
    assert store.jobs.adopt(new) == []  # nothing left from older epochs


def test_adoption_takes_running_jobs_too_so_the_new_leader_can_finish_them(store):
    job = store.jobs.create(snapshot())
    old = store.leases.acquire(NAME, "a", duration=SHORT, margin=0.1)
    store.jobs.claim(old, job.id)
    store.jobs.mark_running(old, job.id, "agent-7")
    time.sleep(SHORT + 0.05)
    new = store.leases.acquire(NAME, "b", duration=30)

    (adopted,) = store.jobs.adopt(new)
    done = store.jobs.finish(new, job.id, JobState.SUCCEEDED)

    assert (adopted.state, adopted.agent_job_id) == (JobState.RUNNING, "agent-7")
    assert (done.state, done.epoch) == (JobState.SUCCEEDED, 2)


def test_a_job_claimed_by_one_epoch_cannot_be_recorded_by_another(store):
    job = store.jobs.create(snapshot())
    first = store.leases.acquire(NAME, "a", duration=30)
    store.jobs.claim(first, job.id)
    again = store.leases.acquire(NAME, "a", duration=30)  # same holder, restarted: new epoch

    with pytest.raises(StaleClaim):
        store.jobs.mark_running(again, job.id, "agent-1")  # must adopt it first
    store.jobs.adopt(again)
    assert store.jobs.mark_running(again, job.id, "agent-1").epoch == again.epoch


def test_recording_the_same_agent_answer_twice_is_no_change_but_a_different_one_is_refused(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(snapshot())
    store.jobs.claim(lease, job.id)
    first = store.jobs.mark_running(lease, job.id, "agent-1")

    assert store.jobs.mark_running(lease, job.id, "agent-1") == first
    with pytest.raises(StaleClaim):
        store.jobs.mark_running(lease, job.id, "agent-2")


def test_a_send_the_agent_never_accepted_is_retried_until_the_attempts_run_out(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(snapshot(max_attempts=2))

    store.jobs.claim(lease, job.id)
    retry = store.jobs.requeue(lease, job.id, "agent unreachable", delay=0)
    assert (retry.state, retry.error) == (JobState.PENDING, "agent unreachable")
    store.jobs.claim(lease, job.id)
    failed = store.jobs.requeue(lease, job.id, "agent unreachable", delay=0)

    assert (failed.state, failed.attempts) == (JobState.FAILED, 2)


def test_a_requeued_job_is_not_claimed_before_its_delay(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    later, soon = store.jobs.create(snapshot()), store.jobs.create(snapshot())
    for job, delay in ((later, 30), (soon, SHORT)):
        store.jobs.claim(lease, job.id)
        store.jobs.requeue(lease, job.id, "agent unreachable", delay=delay)
    time.sleep(SHORT + 0.05)

    assert [j.id for j in store.jobs.claim_due(lease, limit=2)] == [soon.id]


def test_a_finished_job_stays_finished(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(snapshot())
    store.jobs.claim(lease, job.id)
    done = store.jobs.finish(lease, job.id, JobState.SUCCEEDED)

    assert store.jobs.finish(lease, job.id, JobState.SUCCEEDED) == done
    with pytest.raises(StaleClaim):
        store.jobs.finish(lease, job.id, JobState.FAILED, "late")
    assert store.jobs.claim(lease, job.id) is None


def test_a_pending_job_can_be_cancelled_by_the_leader(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(snapshot())

    cancelled = store.jobs.finish(lease, job.id, JobState.CANCELLED, "policy disabled")

    assert (cancelled.state, cancelled.error) == (JobState.CANCELLED, "policy disabled")


def test_jobs_past_their_deadline_by_the_database_clock_are_overdue(store):
    store.jobs.create(snapshot(timeout=3600))
    assert store.jobs.overdue() == []
    late = store.jobs.create(snapshot(timeout=SHORT))

    time.sleep(SHORT + 0.05)
    assert [j.id for j in store.jobs.overdue()] == [late.id]
