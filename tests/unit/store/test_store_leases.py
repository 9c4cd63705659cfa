"""The leader lease row: taken, renewed and released by conditional UPDATEs on the database's
clock, with an epoch that grows on every change of hands."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from controller.store import Lease, LeaseLost, Store
from controller.store.leases import Leases

NAME = "controller"
SHORT = 0.4  # seconds: leases that tests let expire


def wait_out(seconds: float) -> None:
    time.sleep(seconds + 0.05)


def test_a_free_lease_is_taken_with_epoch_one_and_refused_to_others_while_it_runs(store):
    lease = store.leases.acquire(NAME, "a", duration=30)

    assert (lease.holder, lease.epoch) == ("a", 1)
    assert store.leases.acquire(NAME, "b", duration=30) is None
    info = store.leases.info(NAME)
    assert (info.holder, info.epoch, info.held) == ("a", 1, True)
    assert 29 < info.remaining <= 30


def test_an_expired_lease_goes_to_the_next_holder_with_a_higher_epoch(store):
    first = store.leases.acquire(NAME, "a", duration=SHORT)
    wait_out(SHORT)

    second = store.leases.acquire(NAME, "b", duration=30)

    assert second is not None and second.epoch == first.epoch + 1
    assert store.leases.info(NAME).holder == "b"


def test_renewal_keeps_the_lease_past_its_first_expiry(store):
    lease = store.leases.acquire(NAME, "a", duration=SHORT)
    for _ in range(3):
        time.sleep(SHORT / 3)
        lease = store.leases.renew(lease, duration=SHORT)

    assert store.leases.acquire(NAME, "b", duration=SHORT) is None  # 1.0 s after it was taken
    assert store.leases.info(NAME).epoch == lease.epoch == 1


def test_a_lease_that_expired_cannot_be_renewed_even_if_nobody_took_it(store):
    lease = store.leases.acquire(NAME, "a", duration=SHORT)
    wait_out(SHORT)

    with pytest.raises(LeaseLost):
        store.leases.renew(lease, duration=SHORT)


def test_the_old_epoch_cannot_renew_or_release_after_another_holder_took_over(store):
    old = store.leases.acquire(NAME, "a", duration=SHORT)
    wait_out(SHORT)
    new = store.leases.acquire(NAME, "b", duration=30)

    with pytest.raises(LeaseLost):
        store.leases.renew(old, duration=30)
    assert store.leases.release(old) is False
    assert store.leases.info(NAME).holder == new.holder


def test_release_lets_a_follower_take_over_at_once_with_a_new_epoch(store):
    lease = store.leases.acquire(NAME, "a", duration=30)

    assert store.leases.release(lease) is True
    taken = store.leases.acquire(NAME, "b", duration=30)

    assert taken is not None and taken.epoch == 2


def test_the_same_holder_acquiring_again_gets_a_new_epoch_that_fences_the_old_one(store):
    before = store.leases.acquire(NAME, "a", duration=30)
    after = store.leases.acquire(NAME, "a", duration=30)

    assert after.epoch == before.epoch + 1
    with pytest.raises(LeaseLost):
        store.leases.renew(before, duration=30)


def test_expiry_follows_the_database_clock_not_the_controllers_clocks(db_url, open_store):
    # Two controllers whose own clocks disagree by hours agree on the lease all the same: the
    # database sets and compares expiry; local clocks only time when to stop acting.
    store = open_store()
    skewed = Leases(store.engine, clock=lambda: time.monotonic() + 7200)
    mine = store.leases.acquire(NAME, "a", duration=SHORT, margin=0.1)

    assert skewed.acquire(NAME, "b", duration=SHORT) is None
    wait_out(SHORT)
    theirs = skewed.acquire(NAME, "b", duration=SHORT)

    assert theirs is not None and theirs.epoch == mine.epoch + 1
    assert theirs.valid_until > time.monotonic() + 7000  # on its own clock


def test_the_holder_stops_acting_a_margin_before_the_database_expiry(store):
    sent = time.monotonic()
    lease = store.leases.acquire(NAME, "a", duration=10, margin=2)

    assert sent + 8 <= lease.valid_until <= time.monotonic() + 8
    assert lease.valid_at(lease.valid_until - 0.001) and not lease.valid_at(lease.valid_until)


def test_controllers_racing_for_a_lease_never_taken_get_one_leader(open_store):
    stores: list[Store] = [open_store() for _ in range(4)]
    start = threading.Barrier(len(stores))

    def race(i: int) -> Lease | None:
        start.wait()
        return stores[i].leases.acquire(NAME, f"c{i}", duration=30)

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(race, range(len(stores))))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].epoch == 1
