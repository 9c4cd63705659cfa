"""Admission decisions with a fake clock, fake temperatures and fake pool load."""

from __future__ import annotations

from typing import Any

import pytest

from agent.admission import Admission, AdmissionConfig
from agent.errors import NotAdmitted


class World:
    def __init__(self) -> None:
        self.now = 0.0
        self.temperature: float | None = 40.0
        self.iops: dict[str, float] = {}
        self.steps: list[tuple[str, dict[str, Any]]] = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now >= 3:
            self.temperature = 40.0  # the rack cools down

    def record(self, step: str, **detail: Any) -> None:
        self.steps.append((step, detail))

    def admission(self, **config: Any) -> Admission:
        return Admission(
            AdmissionConfig(**{"wait_timeout": 10, "poll_interval": 1, **config}),
            hottest=lambda: self.temperature,
            pool_iops=lambda pools: {p: self.iops.get(p, 0.0) for p in pools},
            clock=lambda: self.now,
            sleep=self.sleep,
        )


def test_jobs_per_pool_and_per_host_are_limited():
    world = World()
    admission = world.admission(max_jobs=2, max_jobs_per_pool=1, wait_timeout=0)
    with admission.admitted("a", {"/pool1"}, world.record):
        with pytest.raises(NotAdmitted, match="1 jobs run on pool /pool1"):
            with admission.admitted("b", {"/pool1"}, world.record):
                pass
        with admission.admitted("c", {"rbd:rbd"}, world.record):
            with pytest.raises(NotAdmitted, match="2 jobs run on this host"):
                with admission.admitted("d", {"/pool2"}, world.record):
                    pass
    with admission.admitted("e", {"/pool1"}, world.record):
        pass  # the places were given back


def test_a_hot_host_makes_the_job_wait_and_it_runs_once_cool():
    world = World()
    world.temperature = 91.0
    with world.admission(temperature_ceiling=85).admitted("j", {"/p"}, world.record):
        pass
    # One record per reason, not one per poll; then the place.
    assert [s for s, _ in world.steps] == ["admission-wait", "admitted"]
    assert "91.0 °C (ceiling 85.0 °C)" in world.steps[0][1]["reason"]


def test_a_host_hot_past_the_deadline_refuses_with_retry_after():
    world = World()
    world.temperature = 95.0
    world.sleep = lambda seconds: setattr(world, "now", world.now + seconds)  # never cools
    with pytest.raises(NotAdmitted, match="not admitted within 10 s") as refused:
        with world.admission(temperature_ceiling=85).admitted("j", {"/p"}, world.record):
            pass
    assert refused.value.retry_after == 5
    assert world.steps[-1][0] == "admission-refused"


def test_a_pool_at_its_iops_capacity_makes_jobs_on_it_wait():
    world = World()
    world.iops = {"/busy": 900.0}
    admission = world.admission(iops_capacity={"/busy": 800.0}, wait_timeout=0)
    with pytest.raises(NotAdmitted, match="pool /busy serves 900 IOPS \\(capacity 800\\)"):
        with admission.admitted("j", {"/busy"}, world.record):
            pass
    with admission.admitted("k", {"/quiet"}, world.record):
        pass


def test_live_merges_slow_down_near_a_ceiling_and_speed_up_after():
    world = World()
    admission = world.admission(
        temperature_ceiling=80, iops_capacity={"/p": 1000}, throttled_bandwidth_mib=16
    )
    assert admission.merge_bandwidth({"/p"}, 0) == (0, None)
    world.temperature = 73.0  # 0.9 of the ceiling is 72
    slow, reason = admission.merge_bandwidth({"/p"}, 0)
    assert slow == 16 and reason is not None and "73.0 °C" in reason
    assert admission.merge_bandwidth({"/p"}, 8) == (8, None)  # already slower than that
    world.temperature = 40.0
    world.iops["/p"] = 950.0
    slow, reason = admission.merge_bandwidth({"/p"}, 100)
    assert slow == 16 and reason is not None and "950 IOPS" in reason
    world.iops["/p"] = 100.0
    assert admission.merge_bandwidth({"/p"}, 100) == (100, None)


def test_a_slowed_merge_speeds_up_only_clearly_below_the_threshold():
    world = World()
    admission = world.admission(temperature_ceiling=100, throttled_bandwidth_mib=16)
    world.temperature = 89.0  # below 90 (0.9 of the ceiling), above 81 (0.9 of that)
    assert admission.merge_bandwidth({"/p"}, 0) == (0, None)
    slow, reason = admission.merge_bandwidth({"/p"}, 0, throttled_now=True)
    assert slow == 16 and reason is not None
    world.temperature = 80.0
    assert admission.merge_bandwidth({"/p"}, 0, throttled_now=True) == (0, None)
