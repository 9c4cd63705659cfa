"""Leader election: a follower takes the lease, the leader renews it, and a leader that cannot
renew stops acting when its lease runs out by its own clock, before anyone else may lead."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from controller.store import LeaderElection, Lease, LeaseConfig, LeaseLost, StoreUnavailable

CONFIG = LeaseConfig(duration=10, renew_interval=3, retry_interval=1, margin=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedLeases:
    """Answers acquire and renew as a test says, on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.free = True
        self.renewal_error: Exception | None = None
        self.epoch = 0
        self.released: list[Lease] = []

    def _lease(self, holder: str, duration: float, margin: float) -> Lease:
        return Lease("controller", holder, self.epoch, self.clock() + duration - margin)

    def acquire(self, name: str, holder: str, duration: float, margin: float = 0.0) -> Lease | None:
        if not self.free:
            return None
        self.free = False
        self.epoch += 1
        return self._lease(holder, duration, margin)

    def renew(self, lease: Lease, duration: float, margin: float = 0.0) -> Lease:
        if self.renewal_error is not None:
            raise self.renewal_error
        return self._lease(lease.holder, duration, margin)

    def release(self, lease: Lease) -> bool:
        self.released.append(lease)
        self.free = True
        return True


def election(leases: ScriptedLeases) -> LeaderElection:
    return LeaderElection(leases, CONFIG, holder="me", clock=leases.clock)  # type: ignore[arg-type]


def test_a_follower_leads_once_it_takes_the_lease_and_renews_on_schedule():
    leases = ScriptedLeases(FakeClock())
    leases.free = False
    elected = election(leases)

    assert elected.tick() == CONFIG.retry_interval and elected.leader() is None
    leases.free = True
    assert elected.tick() == CONFIG.renew_interval
    first = elected.leader()
    assert first is not None and first.valid_until == 1000 + 10 - 1

    leases.clock.now += 1
    assert elected.tick() == pytest.approx(2)  # not due yet
    leases.clock.now += 2
    elected.tick()
    assert elected.leader().valid_until == 1003 + 10 - 1


def test_a_leader_that_cannot_reach_the_database_stops_acting_when_its_lease_runs_out():
    leases = ScriptedLeases(FakeClock())
    elected = election(leases)
    elected.tick()
    leases.renewal_error = StoreUnavailable("connection refused")

    leases.clock.now += CONFIG.renew_interval
    elected.tick()
    assert elected.leader() is not None  # still within its lease
    leases.clock.now = 1000 + CONFIG.duration - CONFIG.margin  # no tick needed to notice

    assert elected.leader() is None


def test_a_leader_whose_renewal_is_refused_stops_at_once():
    leases = ScriptedLeases(FakeClock())
    elected = election(leases)
    elected.tick()
    leases.renewal_error = LeaseLost("taken over")

    leases.clock.now += CONFIG.renew_interval
    assert elected.tick() == CONFIG.retry_interval
    assert elected.leader() is None


def test_resigning_releases_the_lease():
    leases = ScriptedLeases(FakeClock())
    elected = election(leases)
    elected.tick()

    elected.resign()

    assert elected.leader() is None and [lease.epoch for lease in leases.released] == [1]


@pytest.mark.parametrize(
    "times",
    [
        {"duration": 10, "renew_interval": 9, "margin": 1},  # no time left to renew
        {"duration": 10, "renew_interval": 0},
        {"duration": 10, "margin": -1},
    ],
)
def test_lease_settings_that_cannot_work_are_refused(times):
    with pytest.raises(ValueError):
        LeaseConfig(**times)


# Renewed five times a lease; a tick may come 0.6 s late before the leader loses it.
FAST = LeaseConfig(duration=1.0, renew_interval=0.2, retry_interval=0.1, margin=0.2)


def keep_ticking(elected: LeaderElection, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            stop.wait(elected.tick())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_when_the_leader_stops_the_follower_leads_within_the_configured_time_never_both(
    open_store,
):
    first = LeaderElection(open_store().leases, FAST, holder="first")
    second = LeaderElection(open_store().leases, FAST, holder="second")
    first.tick()
    assert first.leader() is not None
    stop_first, stop_second = threading.Event(), threading.Event()
    threads = [keep_ticking(first, stop_first), keep_ticking(second, stop_second)]
    try:
        time.sleep(2 * FAST.renew_interval)
        assert first.leader() is not None and second.leader() is None  # renewals hold it

        stop_first.set()  # the leader stops renewing: dead, hung or cut off
        threads[0].join()
        died = time.monotonic()
        while second.leader() is None:
            assert first.leader() is None or second.leader() is None
            assert time.monotonic() - died < FAST.takeover_within + 0.5, "no takeover"
            time.sleep(0.005)
        took_over = time.monotonic() - died
    finally:
        stop_first.set()
        stop_second.set()
        for thread in threads:
            thread.join()

    assert took_over <= FAST.takeover_within + 0.1
    assert first.leader() is None
    assert second.leader().epoch == 2


def test_the_asyncio_runner_leads_until_stopped_then_frees_the_lease(store):
    elected = LeaderElection(store.leases, FAST, holder="me")

    async def lead_briefly() -> bool:
        stop = asyncio.Event()
        runner = asyncio.create_task(elected.run(stop))
        await asyncio.sleep(0.2)
        leading = elected.leader() is not None
        stop.set()
        await runner
        return leading

    assert asyncio.run(lead_briefly()) is True
    assert store.leases.info(FAST.name).holder is None
