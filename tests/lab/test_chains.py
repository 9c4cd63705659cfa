"""Backing chains: health, consolidation and flatten, live and offline, with cancel, an
abort from outside and an agent killed in the middle of a live commit. After each, every kept
snapshot reads back identical to what it held when taken, and the guest's data is intact."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from agent.admission import Admission, AdmissionConfig
from agent.config import AgentConfig
from agent.errors import Cancelled, Precondition
from agent.hypervisor import qemu_process
from agent.jobs import JobState, Journal
from agent.model import DomainState, Quiesce, SnapshotRequest
from agent.operations import (
    chains,
    consolidate,
    delete,
    merge_speed,
    recovery,
    snapshot,
    stats,
    volumes,
)
from agent.operations.consolidate import ChainRequest
from agent.operations.recovery import Recovered
from agent.operations.services import Services
from hostsnap_lab import domains, guest_agent
from hostsnap_lab.lab import Lab

from .agent_process import hwmon_fixture
from .support import (
    chain,
    disk_source,
    has_marker,
    qcow2_and_rbd_disks,
    run_agent_process,
    start,
    stop,
    wait_for_agent,
    write_marker,
)

NAME = "lab-chain"
CLONE = f"{NAME}-clone"
PARENT = f"{NAME}-parent"


def chain_domain(lab: Lab) -> domains.LabDomain:
    disks = qcow2_and_rbd_disks(lab, lab.paths.pool / f"{NAME}.qcow2", CLONE)
    return domains.LabDomain(NAME, disks)


def rbd_cli(lab: Lab, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["rbd", "-c", str(lab.ceph_conf), *args], capture_output=True, text=True, check=check
    )
    return done.stdout


def remove_images(lab: Lab) -> None:
    rbd_cli(lab, "rm", f"rbd/{CLONE}", check=False)
    rbd_cli(lab, "snap", "unprotect", f"rbd/{PARENT}@base", check=False)
    rbd_cli(lab, "snap", "purge", f"rbd/{PARENT}", check=False)
    rbd_cli(lab, "rm", f"rbd/{PARENT}", check=False)
    for made in lab.paths.pool.glob(f"{NAME}*"):
        made.unlink()


def make_domain(lab: Lab, conn: libvirt.virConnect, config: AgentConfig) -> libvirt.virDomain:
    domains.remove(conn, NAME)
    remove_images(lab)
    journal = Journal(config.journal_path)  # records of an earlier run's images
    for record in journal.snapshots(NAME):
        journal.mark_snapshot_deleted(record.id)
    journal.close()
    qcow2 = lab.paths.pool / f"{NAME}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(qcow2)], check=True
    )
    rbd_cli(lab, "create", "--size", "32M", f"rbd/{PARENT}")
    rbd_cli(lab, "snap", "create", f"rbd/{PARENT}@base")
    rbd_cli(lab, "snap", "protect", f"rbd/{PARENT}@base")
    rbd_cli(lab, "clone", f"rbd/{PARENT}@base", f"rbd/{CLONE}")
    domains.define_and_start(conn, lab.paths, chain_domain(lab))
    found = conn.lookupByName(NAME)
    wait_for_agent(found)
    return found


@pytest.fixture(scope="module")
def dom(
    lab: Lab, conn: libvirt.virConnect, agent_config: AgentConfig
) -> Iterator[libvirt.virDomain]:
    yield make_domain(lab, conn, agent_config)
    domains.remove(conn, NAME)
    remove_images(lab)


@pytest.fixture
def fresh_dom(
    lab: Lab, conn: libvirt.virConnect, agent_config: AgentConfig, dom: libvirt.virDomain
) -> libvirt.virDomain:
    """The chain domain made anew, for tests that leave a merge aborted."""
    return make_domain(lab, conn, agent_config)


def take(svc: Services, tmp_path: Path) -> tuple[str, Path]:
    """Snapshots vda and keeps a raw copy of what the snapshot holds."""
    result = snapshot.create(svc, SnapshotRequest(NAME, ("vda",), Quiesce.PREFERRED))
    (disk,) = result.disks
    copy = tmp_path / f"{disk.snapshot_id}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", disk.content, str(copy)], check=True)
    return disk.snapshot_id, copy


def reads_as_taken(svc: Services, snapshot_id: str, copy: Path) -> bool:
    record = svc.journal.snapshot(snapshot_id)
    assert record is not None
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", str(copy), record.content],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def health(svc: Services, target: str = "vda") -> chains.ChainHealth:
    (volume,) = volumes.select(volumes.domain_volumes(svc, NAME), (target,))
    return chains.health(svc, volume, volumes.is_live(svc.host.state(NAME)[0]))


def build_chain(
    svc: Services, dom: libvirt.virDomain, tmp_path: Path, keep: str
) -> dict[str, tuple[str, Path]]:
    """Snapshots s1..sN with a marker before each; those not in `keep` are deleted with
    their merge deferred, leaving layers for consolidation."""
    taken = {}
    for name in ("s1", "s2", "s3", "s4", "s5")[: len(keep)]:
        write_marker(dom, f"{name}-{uuid.uuid4().hex[:6]}")
        taken[name] = take(svc, tmp_path)
    for flag, (sid, _) in zip(keep, taken.values(), strict=True):
        if flag == "-":
            delete.delete(svc, delete.DeleteRequest(sid, defer_merge=True))
    return {n: t for flag, (n, t) in zip(keep, taken.items(), strict=True) if flag == "k"}


def test_live_consolidation_merges_unkept_layers_and_keeps_snapshots_identical(
    dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    # s1 s2 s3 s4 s5: s3 and s5 kept, the others deleted with their merge deferred.
    kept = build_chain(svc, dom, tmp_path, "--k-k")
    before = health(svc)
    assert [len(r.between) for r in before.runs] == [0, 1]  # two commits remove three layers
    assert before.mergeable == 3
    marker = f"during-{uuid.uuid4().hex[:6]}"
    write_marker(dom, marker)

    result = consolidate.consolidate(svc, ChainRequest(NAME, ("vda",)))

    (disk,) = result.disks
    assert disk.depth_before == before.depth and disk.depth_after == before.depth - 3
    assert chain(disk_source(dom)) == [
        layer.path for layer in before.layers if layer.path not in disk.removed
    ]
    assert all(not Path(p).exists() for p in disk.removed)
    for sid, copy in kept.values():
        assert reads_as_taken(svc, sid, copy), sid
    assert health(svc).runs == ()
    assert has_marker(dom, marker)
    assert svc.journal.get(result.job_id).progress > 0.9
    assert guest_agent.fsfreeze_status(dom) == "thawed"


def test_offline_consolidation(dom: libvirt.virDomain, svc: Services, tmp_path: Path):
    kept = build_chain(svc, dom, tmp_path, "-k-")
    marker = f"offline-{uuid.uuid4().hex[:6]}"
    write_marker(dom, marker)
    before = health(svc)
    stop(dom)
    try:
        result = consolidate.consolidate(svc, ChainRequest(NAME, ("vda",)))
        (disk,) = result.disks
        assert disk.depth_after == before.depth - 2
        assert chain(disk_source(dom, inactive=True)) == [
            layer.path for layer in before.layers if layer.path not in disk.removed
        ]
        for sid, copy in kept.values():
            assert reads_as_taken(svc, sid, copy), sid
    finally:
        start(dom)
    assert has_marker(dom, marker)


def killed(
    svc: Services, operation: str, fault: str, after_death: Callable[[], None] = lambda: None
) -> Recovered:
    """Runs a consolidate or flatten of vda in an agent process killed at `fault`, then
    `after_death`, then the start-up recovery; returns what recovery did with that job."""
    key = uuid.uuid4().hex
    code = (
        "from agent.operations import consolidate\n"
        f"consolidate.{operation}(svc, consolidate.ChainRequest({NAME!r}, ('vda',), "
        f"idempotency_key={key!r}))\n"
    )
    died = run_agent_process(svc.config, code, fault)
    assert died.returncode == -9, died.stderr
    after_death()
    outcomes = recovery.recover(svc)
    (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
    return job


def test_agent_killed_after_an_offline_merge_is_finished_by_recovery(
    dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    kept = build_chain(svc, dom, tmp_path, "-k")
    before = health(svc)
    stop(dom)
    try:
        job = killed(svc, "consolidate", "after-merge")

        assert job.state == JobState.FAILED and "was finished" in job.detail
        after = chain(disk_source(dom, inactive=True))
        assert len(after) == before.depth - before.mergeable
        assert all(Path(p).exists() for p in after)
        for sid, copy in kept.values():
            assert reads_as_taken(svc, sid, copy), sid
    finally:
        start(dom)


def slow_top(dom: libvirt.virDomain, svc: Services, tmp_path: Path) -> tuple[str, Path]:
    """A kept snapshot, then a deferred one whose layer is under 24 MiB of new data: its
    consolidation is one active commit that takes a while at 1 MiB/s."""
    kept = take(svc, tmp_path)
    deferred, _ = take(svc, tmp_path)
    guest_agent.exec_in_guest(
        dom, ["/bin/sh", "-c", "dd if=/dev/urandom of=/data/big bs=1M count=24 && sync"], 120
    )
    delete.delete(svc, delete.DeleteRequest(deferred, defer_merge=True))
    return kept


def wait_for_block_job(svc: Services) -> None:
    deadline = time.monotonic() + 30
    while not svc.host.block_job(NAME, "vda"):
        assert time.monotonic() < deadline, "the block commit did not start"
        time.sleep(0.05)


@dataclass
class SlowMerge:
    """A consolidation at 1 MiB/s running in a thread, to be cancelled or aborted."""

    kept: tuple[str, Path]
    chain_before: list[str]
    job_ids: list[str]
    thread: threading.Thread
    failure: list[BaseException]

    @classmethod
    def start(cls, svc: Services, dom: libvirt.virDomain, tmp_path: Path) -> SlowMerge:
        kept = slow_top(dom, svc, tmp_path)
        chain_before = chain(disk_source(dom))
        job_ids: list[str] = []
        failure: list[BaseException] = []
        request = ChainRequest(NAME, ("vda",), bandwidth_mib=1)

        def run() -> None:
            try:
                consolidate.consolidate(svc, request, job_ids.append)
            except BaseException as e:  # the test inspects it
                failure.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for_block_job(svc)
        return cls(kept, chain_before, job_ids, thread, failure)

    def end(self) -> BaseException | None:
        self.thread.join(60)
        return self.failure[0] if self.failure else None


def test_a_live_merge_slows_down_while_the_host_runs_hot(
    dom: libvirt.virDomain, svc: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sysfs = hwmon_fixture(tmp_path / "sysfs")  # one sensor at 47 °C
    sensor = sysfs / "class" / "hwmon" / "hwmon0" / "temp1_input"
    config = AdmissionConfig(temperature_ceiling=50.0, throttle_at=0.9, throttled_bandwidth_mib=1)
    hot = Admission(config, lambda: stats.hottest(sysfs), lambda pools: {})
    monkeypatch.setattr(svc, "admission", hot)
    monkeypatch.setattr(merge_speed.Speed, "CHECK_SECONDS", 0.2)
    slow_top(dom, svc, tmp_path)
    kept = take(svc, tmp_path)  # the 24 MiB layer no longer active: a throttled commit ends
    job_ids: list[str] = []
    merging = threading.Thread(
        target=consolidate.consolidate, args=(svc, ChainRequest(NAME, ("vda",)), job_ids.append)
    )
    merging.start()
    try:
        deadline = time.monotonic() + 30
        while (svc.host.block_job(NAME, "vda") or {}).get("bandwidth") != 1:
            assert time.monotonic() < deadline, "the merge was not slowed down"
            time.sleep(0.05)
        sensor.write_text("30000\n")  # the rack cools down
    finally:
        merging.join(120)
    assert not merging.is_alive()
    job = svc.journal.get(job_ids[0])
    assert job.state == JobState.SUCCEEDED
    speeds = [(s.detail["mib"], s.detail["reason"]) for s in job.steps if s.name == "bandwidth"]
    assert speeds[0][0] == 1 and "47.0 °C (ceiling 50.0 °C)" in speeds[0][1]
    assert speeds[-1] == (0, "as requested")
    assert reads_as_taken(svc, *kept)


def test_flatten_is_refused_while_it_would_lose_snapshots_unless_forced(
    dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    marker = f"flatten-{uuid.uuid4().hex[:6]}"
    write_marker(dom, marker)
    kept_id, _ = take(svc, tmp_path)
    chain_before = chain(disk_source(dom))

    with pytest.raises(Precondition, match=kept_id) as refused:
        consolidate.flatten(svc, ChainRequest(NAME, ("vda",)))
    assert refused.value.reason == "SNAPSHOTS_WOULD_BE_LOST"
    assert chain(disk_source(dom)) == chain_before

    result = consolidate.flatten(svc, ChainRequest(NAME, ("vda",), force=True))
    (disk,) = result.disks
    assert kept_id in disk.snapshots_lost
    assert chain(disk_source(dom)) == [disk_source(dom)] == [disk.active_image]
    assert all(not Path(p).exists() for p in disk.removed)
    assert svc.journal.snapshot(kept_id) is None
    assert has_marker(dom, marker)
    stop(dom)
    start(dom)  # boots from the single image
    assert has_marker(dom, marker)


def test_agent_killed_while_it_paused_the_guest_after_a_live_flatten(
    dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    """Killed while the domain is paused for the flush of the pulled data: recovery resumes
    the guest, flushes again and removes the layers."""
    marker = f"flatten-kill-{uuid.uuid4().hex[:6]}"
    write_marker(dom, marker)
    build_chain(svc, dom, tmp_path, "-")  # a layer whose snapshot is gone: nothing is lost
    layers_before = chain(disk_source(dom))

    def left_paused() -> None:
        assert svc.host.state(NAME)[0] == DomainState.PAUSED

    job = killed(svc, "flatten", "while-paused", left_paused)

    assert job.state == JobState.FAILED and "was finished" in job.detail
    assert svc.host.state(NAME)[0] == DomainState.RUNNING
    steps = svc.journal.get(job.job_id).steps
    assert any(s.name == "resumed" and s.detail.get("by") == "recovery" for s in steps)
    assert [s.name for s in steps].count("paused") == 2  # the dead agent's, recovery's flush
    assert chain(disk_source(dom)) == [layers_before[0]]
    assert not any(Path(p).exists() for p in layers_before[1:])
    assert has_marker(dom, marker)


def test_rbd_clone_depth_and_flatten(lab: Lab, dom: libvirt.virDomain, svc: Services):
    before = health(svc, "vdb")
    assert before.rbd_parents == (f"rbd/{PARENT}@base",) and before.depth == 2

    result = consolidate.flatten(svc, ChainRequest(NAME, ("vdb",)))

    (disk,) = result.disks
    assert (disk.depth_before, disk.depth_after) == (2, 1)
    assert health(svc, "vdb").rbd_parents == ()
    assert "parent" not in rbd_cli(lab, "info", f"rbd/{CLONE}")
    assert svc.journal.get(result.job_id).progress > 0.9


def test_cancel_aborts_a_live_merge_and_leaves_the_chain(
    fresh_dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    dom = fresh_dom
    merging = SlowMerge.start(svc, dom, tmp_path)
    deadline = time.monotonic() + 30
    while not 0 < svc.journal.get(merging.job_ids[0]).progress < 1:  # reported while it runs
        assert time.monotonic() < deadline, "no progress was reported"
        time.sleep(0.2)
    svc.cancellations.request(merging.job_ids[0])
    error = merging.end()

    assert isinstance(error, Cancelled), error
    assert svc.journal.get(merging.job_ids[0]).state == JobState.CANCELLED
    assert chain(disk_source(dom)) == merging.chain_before
    assert not svc.host.block_job(NAME, "vda")
    assert reads_as_taken(svc, *merging.kept)


def test_an_abort_from_outside_ends_the_job_cancelled(
    fresh_dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    dom = fresh_dom
    merging = SlowMerge.start(svc, dom, tmp_path)
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "blockjob", NAME, "vda", "--abort"], check=True
    )
    error = merging.end()

    assert isinstance(error, Cancelled) and error.reason == "BLOCK_JOB_ABORTED", error
    job = svc.journal.get(merging.job_ids[0])
    assert job.state == JobState.CANCELLED and job.error_reason == "BLOCK_JOB_ABORTED"
    assert chain(disk_source(dom)) == merging.chain_before
    assert reads_as_taken(svc, *merging.kept)


def test_a_commit_into_the_base_of_an_aborted_merge_is_on_disk_before_its_top_goes(
    fresh_dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    """QEMU before 9.0 leaves the base of an aborted active commit open read-write, and does
    not flush a later commit into such a base: without the agent's flush, the layer above
    was deleted while the merged data was still only in QEMU's cache."""
    dom = fresh_dom
    merging = SlowMerge.start(svc, dom, tmp_path)
    svc.cancellations.request(merging.job_ids[0])
    assert isinstance(merging.end(), Cancelled)
    base = merging.chain_before[1]
    assert qemu_process.opened_read_write(NAME, base), "the lab's QEMU should show the defect"
    kept = take(svc, tmp_path)  # the layer above that base now holds a kept snapshot

    result = consolidate.consolidate(svc, ChainRequest(NAME, ("vda",)))

    assert reads_as_taken(svc, *kept)  # read from disk, as a backup or a crashed QEMU would
    assert reads_as_taken(svc, *merging.kept)
    steps = [s.name for s in svc.journal.get(result.job_id).steps]
    assert steps.count("paused") == steps.count("resumed") == 1
    assert svc.host.state(NAME)[0] == DomainState.RUNNING


def test_agent_killed_during_a_live_commit_is_finished_by_recovery(
    fresh_dom: libvirt.virDomain, svc: Services, tmp_path: Path
):
    dom = fresh_dom
    kept_id, copy = slow_top(dom, svc, tmp_path)
    chain_before = chain(disk_source(dom))
    key = uuid.uuid4().hex
    code = (
        "from agent.operations import consolidate\n"
        f"consolidate.consolidate(svc, consolidate.ChainRequest({NAME!r}, ('vda',), "
        f"bandwidth_mib=4, idempotency_key={key!r}))\n"
    )
    died = run_agent_process(svc.config, code, "during-block-commit")
    assert died.returncode == -9, died.stderr
    assert svc.host.block_job(NAME, "vda")  # QEMU goes on with the commit

    outcomes = recovery.recover(svc)

    (job,) = [o for o in outcomes if svc.journal.get(o.job_id).idempotency_key == key]
    assert job.state == JobState.FAILED and "was finished" in job.detail
    after = chain(disk_source(dom))
    assert len(after) == len(chain_before) - 1 and after[0] != chain_before[0]
    assert not Path(chain_before[0]).exists()
    assert reads_as_taken(svc, kept_id, copy)
    assert guest_agent.fsfreeze_status(dom) == "thawed"
