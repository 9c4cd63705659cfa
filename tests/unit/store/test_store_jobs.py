"""Jobs as records: idempotent creation, their intents recorded before any dispatch, and the
intents' way from recorded to applied in CloudStack."""

from __future__ import annotations

import pytest

from controller.store import (
    Conflict,
    IntentSpec,
    IntentState,
    JobKind,
    JobSpec,
    JobState,
    LeaseLost,
    NotFound,
    StaleClaim,
)

NAME = "controller"


def revert(**options) -> JobSpec:
    return JobSpec(
        JobKind.REVERT,
        "kvm-1",
        vm_id="vm-1",
        params={"snapshot": "s-1", "quiesce": "none"},
        **options,
    )


def test_a_new_job_is_pending_with_its_deadline_and_an_idempotency_key_of_its_own(store):
    job = store.jobs.create(revert(timeout=600))

    assert (job.state, job.attempts, job.epoch, job.agent_job_id) == (
        JobState.PENDING,
        0,
        None,
        None,
    )
    assert job.idempotency_key == f"hostsnap-controller/{job.id}"
    assert dict(job.params) == {"snapshot": "s-1", "quiesce": "none"}
    assert (job.deadline - job.created_at).total_seconds() == 600
    assert store.jobs.get(job.id) == job


def test_creating_a_job_again_with_its_key_returns_the_first_one(store):
    first = store.jobs.create(revert(idempotency_key="run-1/vol-1"))

    again = store.jobs.create(revert(idempotency_key="run-1/vol-1"))

    assert again == first
    assert len(store.jobs.find()) == 1


def test_a_key_used_for_another_job_is_a_conflict(store):
    store.jobs.create(revert(idempotency_key="run-1/vol-1"))

    with pytest.raises(Conflict):
        store.jobs.create(JobSpec(JobKind.DELETE, "kvm-1", idempotency_key="run-1/vol-1"))


def test_an_unknown_job_is_not_found(store):
    with pytest.raises(NotFound):
        store.jobs.get("no-such-job")
    assert store.jobs.by_key("no-such-key") is None


def test_a_job_for_a_run_that_does_not_exist_is_refused(store):
    with pytest.raises(Conflict):
        store.jobs.create(revert(run_id="no-such-run"))
    assert store.jobs.find() == []


def test_intents_are_recorded_with_the_job_before_it_can_be_dispatched(store):
    job = store.jobs.create(
        revert(intents=(IntentSpec("vol-1", "/pool/vol-1"), IntentSpec("vol-2", None)))
    )

    recorded = store.intents.of_job(job.id)

    assert [(i.volume_id, i.previous_path, i.state) for i in recorded] == [
        ("vol-1", "/pool/vol-1", IntentState.RECORDED),
        ("vol-2", None, IntentState.RECORDED),
    ]
    assert store.intents.open() == recorded


def test_an_intent_goes_from_recorded_to_changed_to_applied(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(revert(intents=(IntentSpec("vol-1", "/pool/vol-1"),)))
    (intent,) = store.intents.of_job(job.id)

    changed = store.intents.changed(lease, intent.id, "/pool/vol-1.hostsnap-s1")
    assert (changed.state, changed.new_path) == (IntentState.CHANGED, "/pool/vol-1.hostsnap-s1")
    assert store.intents.open(volume_id="vol-1") == [changed]
    applied = store.intents.applied(lease, intent.id)

    assert applied.state is IntentState.APPLIED
    assert store.intents.open() == []
    assert store.intents.applied(lease, intent.id) == applied  # again: no change


def test_an_intent_cannot_be_applied_before_the_new_image_is_known(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(revert(intents=(IntentSpec("vol-1", "/pool/vol-1"),)))
    (intent,) = store.intents.of_job(job.id)

    with pytest.raises(StaleClaim):
        store.intents.applied(lease, intent.id)


def test_an_abandoned_intent_is_closed_with_its_reason(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(revert(intents=(IntentSpec("vol-1", "/pool/vol-1"),)))
    (intent,) = store.intents.of_job(job.id)

    abandoned = store.intents.abandoned(lease, intent.id, "revert failed, disk unchanged")

    assert (abandoned.state, abandoned.error) == (
        IntentState.ABANDONED,
        "revert failed, disk unchanged",
    )
    with pytest.raises(StaleClaim):
        store.intents.changed(lease, intent.id, "/elsewhere")


def test_intent_changes_are_fenced_by_the_lease(store):
    lease = store.leases.acquire(NAME, "a", duration=30)
    job = store.jobs.create(revert(intents=(IntentSpec("vol-1", "/pool/vol-1"),)))
    (intent,) = store.intents.of_job(job.id)
    store.leases.acquire(NAME, "a", duration=30)  # a newer epoch leads now

    with pytest.raises(LeaseLost):
        store.intents.changed(lease, intent.id, "/pool/vol-1.hostsnap-s1")
    assert store.intents.get(intent.id).state is IntentState.RECORDED


@pytest.mark.parametrize("options", [{"host_id": ""}, {"timeout": 0}, {"max_attempts": 0}], ids=str)
def test_a_job_spec_without_a_host_timeout_or_attempt_is_refused(options):
    fields = {"kind": JobKind.SNAPSHOT, "host_id": "kvm-1", **options}
    with pytest.raises(ValueError):
        JobSpec(**fields)
