"""A snapshot's per-disk strategies (agent/operations/disk_strategies.py): the plan a journal
of the current release holds reads into them and writes back unchanged, a job it left running
recovers from it, and a running mixed domain is snapshotted disk by disk in the lab's order."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agent import faults
from agent.config import AgentConfig
from agent.errors import OperationFailed
from agent.hypervisor import domain_xml
from agent.jobs import JobState, Journal
from agent.model import DomainState, Quiesce, RbdSnap, RbdSource, SnapshotRequest, VolumeKind
from agent.operations import rbd_overlay, snapshot
from agent.operations.disk_strategies import (
    FileOverlay,
    Offline,
    Plan,
    RbdFrozenAcross,
    RbdShortFreeze,
)
from agent.operations.services import Services
from tests.unit.fakes import FakeGuest, UnusedHost, UnusedRbd

A, B = "a" * 32, "b" * 32
RBD_DISK = (
    "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
    "<source protocol='rbd' name='rbd/vm'/><target dev='vdb'/></disk>"
)

# The `plan` step's details as the current release (main, a5c6849) writes them:
# json.dumps(dataclasses.asdict(snapshot.Plan(...))) of a running domain with a qcow2 disk and
# an RBD disk on the short freeze, copied verbatim.
MAIN_PLAN_SHORT_FREEZE = json.loads(
    '{"live": true, "snapshot_ids": {"vda": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "vdb": '
    '"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}, "overlays": {"vda": '
    '"/pool/vm.qcow2.hostsnap-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "actives": {"vda": '
    '"/pool/vm.qcow2"}, "rbd_snaps": {"vdb": "hostsnap-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}, '
    '"rbd_overlays": {"vdb": "/var/lib/hostsnap/rbd-overlays/rbd.vm.'
    'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.qcow2"}, "rbd_disks": {"vdb": "<disk type=\'network\' '
    "device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='rbd/vm'/>"
    "<target dev='vdb'/></disk>\"}}"
)
# The same release's plan of a shut-off domain, and of a running one without the short freeze.
MAIN_PLAN_OFFLINE = {
    "live": False,
    "snapshot_ids": {"vda": A, "vdb": B},
    "overlays": {"vda": f"/pool/vm.qcow2.hostsnap-{A}"},
    "actives": {"vda": "/pool/vm.qcow2"},
    "rbd_snaps": {"vdb": f"hostsnap-{B}"},
    "rbd_overlays": {},
    "rbd_disks": {},
}
MAIN_PLAN_FROZEN_ACROSS = {**MAIN_PLAN_OFFLINE, "live": True}


def journal_with_plan(tmp_path: Path, plan: dict[str, Any], *later: str) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite")
    request = dataclasses.asdict(SnapshotRequest("vm", quiesce=Quiesce.PREFERRED))
    journal.start("job", "snapshot", "vm", request, None)
    journal.record("job", "plan", **plan)
    for step in later:
        journal.record("job", step)
    return journal


@pytest.mark.parametrize(
    ("written", "strategies"),
    [
        (MAIN_PLAN_SHORT_FREEZE, (FileOverlay, RbdShortFreeze)),
        (MAIN_PLAN_OFFLINE, (Offline, RbdFrozenAcross)),
        (MAIN_PLAN_FROZEN_ACROSS, (FileOverlay, RbdFrozenAcross)),
    ],
)
def test_a_plan_the_current_release_journalled_reads_into_strategies_and_writes_back_the_same(
    tmp_path: Path, written: dict[str, Any], strategies: tuple[type, ...]
):
    journal = journal_with_plan(tmp_path, written)

    plan = snapshot.read_plan(journal.get("job"))

    assert plan is not None and tuple(type(d) for d in plan.disks) == strategies
    assert [(d.target, d.snapshot_id) for d in plan.disks] == [("vda", A), ("vdb", B)]
    again = dataclasses.asdict(plan.record())
    assert json.dumps(again) == json.dumps(written)  # same keys, same order, same values


def test_the_short_freeze_disk_keeps_every_field_of_the_journalled_plan(tmp_path: Path):
    plan = snapshot.read_plan(journal_with_plan(tmp_path, MAIN_PLAN_SHORT_FREEZE).get("job"))

    assert plan is not None
    assert plan.disks == (
        FileOverlay("vda", A, "/pool/vm.qcow2", f"/pool/vm.qcow2.hostsnap-{A}"),
        RbdShortFreeze(
            "vdb",
            B,
            f"hostsnap-{B}",
            f"/var/lib/hostsnap/rbd-overlays/rbd.vm.{B}.qcow2",
            RBD_DISK,
        ),
    )
    assert plan.switches() == {
        "vda": f"/pool/vm.qcow2.hostsnap-{A}",
        "vdb": f"/var/lib/hostsnap/rbd-overlays/rbd.vm.{B}.qcow2",
    }
    assert [d.method for d in plan.disks] == ["qcow2-overlay", "rbd-short-freeze"]


# --- a running domain: vda a qcow2 file, vdb an RBD image --------------------------------


class MixedHost(UnusedHost):
    """Each disk's chain of files above its image (vdb: none means on RBD); an external
    snapshot puts overlays on top, an active commit runs until pivoted, then drops the top."""

    def __init__(self, base: str, state: DomainState = DomainState.RUNNING) -> None:
        self.chains: dict[str, list[str]] = {"vda": [base], "vdb": []}
        self.running = state
        self.committing: str | None = None
        self.calls: list[str] = []

    def exists(self, name: str) -> bool:
        return True

    def state(self, name: str) -> tuple[DomainState, int]:
        return self.running, 1

    def xml(self, name: str, *, inactive: bool = False) -> str:
        disks = ""
        for target, chain in self.chains.items():
            mirror = (
                "<mirror job='active-commit' ready='yes'/>" if self.committing == target else ""
            )
            if not chain:
                disks += RBD_DISK
                continue
            store = "".join(f"<backingStore type='file'><source file='{p}'/>" for p in chain[1:])
            store += "</backingStore>" * (len(chain) - 1)
            disks += (
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source file='{chain[0]}'/>{store}<target dev='{target}'/>{mirror}</disk>"
            )
        return f"<domain><name>{name}</name><devices>{disks}</devices></domain>"

    def shut_off_cleanly(self, name: str) -> bool:
        return True

    def define(self, xml: str) -> None:
        self.calls.append("define")
        for volume in domain_xml.volumes("vm", xml):
            chain = self.chains[volume.target]
            if volume.path is not None and chain[:1] != [volume.path]:
                chain.insert(0, volume.path)

    def snapshot_external(self, name: str, overlays: dict[str, str], targets: list[str]) -> None:
        assert sorted(targets) == ["vda", "vdb"]
        self.calls.append(f"switch {' '.join(sorted(overlays))}")
        for target, overlay in overlays.items():
            self.chains[target].insert(0, overlay)

    def block_job(self, name: str, target: str) -> dict[str, int] | None:
        return {"type": 4, "cur": 9, "end": 9} if self.committing == target else None

    def block_commit(
        self,
        name: str,
        target: str,
        top: str | None,
        base: str | None,
        *,
        active: bool,
        bandwidth_mib: int = 0,
    ) -> None:
        assert active and self.committing is None
        self.calls.append(f"commit {target}")
        self.committing = target

    def block_job_pivot(self, name: str, target: str) -> None:
        self.calls.append(f"pivot {target}")
        self.chains[target].pop(0)
        self.committing = None


class FakeRbd(UnusedRbd):
    def __init__(self) -> None:
        self.snaps: list[str] = []

    def snapshots(self, source: RbdSource) -> list[RbdSnap]:
        return [RbdSnap(name, i, 0.0, False) for i, name in enumerate(self.snaps)]

    def size(self, source: RbdSource) -> int:
        return 1 << 20

    def create_snapshot(self, source: RbdSource, name: str) -> None:
        self.snaps.append(name)

    def remove_snapshot(self, source: RbdSource, name: str) -> None:
        if name in self.snaps:
            self.snaps.remove(name)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    image = pool / "vm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    return image


@pytest.fixture(autouse=True)
def no_fault_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)


def services(tmp_path: Path, host: MixedHost, rbd: FakeRbd, guest: FakeGuest) -> Services:
    config = AgentConfig(state_dir=tmp_path / "state")
    config.rbd_overlay_dir.mkdir(parents=True)
    journal = Journal(config.journal_path)
    return Services(
        config, host, rbd, journal, guest_agents=lambda domain: guest, sleep=lambda s: None
    )


def short_freeze_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's temporary directories are closed to others, which the short freeze refuses.
    monkeypatch.setattr(rbd_overlay, "unusable_because", lambda svc, chosen, live: "")


def test_a_running_mixed_domain_is_snapshotted_in_one_freeze_the_rbd_image_after_the_thaw(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
):
    short_freeze_usable(monkeypatch)
    host, rbd, guest = MixedHost(str(base)), FakeRbd(), FakeGuest()
    svc = services(tmp_path, host, rbd, guest)

    result = snapshot.create(svc, SnapshotRequest("vm", quiesce=Quiesce.REQUIRED))

    assert {(d.target, d.kind, d.method) for d in result.disks} == {
        ("vda", VolumeKind.FILE, "qcow2-overlay"),
        ("vdb", VolumeKind.RBD, "rbd-short-freeze"),
    }
    steps = [s.name for s in svc.journal.get(result.job_id).steps]
    order = ["freeze", "switch-active", "thawed", "rbd-snapshot", "merge-back", "merged-back"]
    assert [steps.index(s) for s in order] == sorted(steps.index(s) for s in order)
    assert host.calls == ["switch vda vdb", "commit vdb", "pivot vdb"]
    vda, vdb = sorted(result.disks, key=lambda d: d.target)
    assert host.chains == {"vda": [vda.active_image, str(base)], "vdb": []}
    assert rbd.snaps == [f"hostsnap-{vdb.snapshot_id}"] and vdb.content.endswith(rbd.snaps[0])
    assert not list(svc.config.rbd_overlay_dir.iterdir())
    assert guest.freeze_status() == "thawed"


def test_without_the_short_freeze_the_rbd_snapshot_is_taken_frozen(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(rbd_overlay, "unusable_because", lambda svc, chosen, live: "disabled")
    host, rbd = MixedHost(str(base)), FakeRbd()
    svc = services(tmp_path, host, rbd, FakeGuest())

    result = snapshot.create(svc, SnapshotRequest("vm", quiesce=Quiesce.REQUIRED))

    assert {d.target: d.method for d in result.disks} == {
        "vda": "qcow2-overlay",
        "vdb": "rbd-frozen-across",
    }
    job = svc.journal.get(result.job_id)
    steps = [s.name for s in job.steps]
    assert steps.index("freeze") < steps.index("rbd-snapshot") < steps.index("thawed")
    assert "merge-back" not in steps and host.calls == ["switch vda"]
    direct = job.step("rbd-direct")
    assert direct is not None and direct.detail == {"reason": "disabled"}


def test_a_failure_after_the_thaw_takes_every_disk_back(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
):
    short_freeze_usable(monkeypatch)
    host, rbd = MixedHost(str(base)), FakeRbd()
    svc = services(tmp_path, host, rbd, FakeGuest())
    monkeypatch.setenv(faults.FAULT_ENV, "fail:before-merge-back")

    with pytest.raises(OperationFailed, match="injected failure at step before-merge-back"):
        snapshot.create(svc, SnapshotRequest("vm", quiesce=Quiesce.REQUIRED))

    # vdb back on RBD first, then its snapshot removed, then vda's overlay merged back.
    assert host.calls == ["switch vda vdb", "commit vdb", "pivot vdb", "commit vda", "pivot vda"]
    assert host.chains == {"vda": [str(base)], "vdb": []}
    assert rbd.snaps == []
    assert sorted(p.name for p in base.parent.iterdir()) == ["vm.qcow2"]
    assert not list(svc.config.rbd_overlay_dir.iterdir())


def recovered(svc: Services) -> tuple[JobState, str]:
    return snapshot.recover(svc, svc.journal.get("job"))


def main_plan_for(base: Path, overlay_dir: Path) -> dict[str, Any]:
    """MAIN_PLAN_SHORT_FREEZE with this test's paths."""
    plan = json.loads(json.dumps(MAIN_PLAN_SHORT_FREEZE))
    plan["actives"]["vda"] = str(base)
    plan["overlays"]["vda"] = f"{base}.hostsnap-{A}"
    plan["rbd_overlays"]["vdb"] = str(overlay_dir / f"rbd.vm.{B}.qcow2")
    return plan


def test_a_job_of_the_current_release_killed_after_its_switch_is_completed_by_recovery(
    tmp_path: Path, base: Path
):
    host, rbd = MixedHost(str(base)), FakeRbd()
    svc = services(tmp_path, host, rbd, FakeGuest())
    plan = main_plan_for(base, svc.config.rbd_overlay_dir)
    journal_steps = ["overlays-created", "freeze", "frozen", "switch-active", "thawed"]
    svc.journal = journal_with_plan(svc.config.state_dir, plan, *journal_steps)
    svc.journal.record("job", "rbd-snapshot", target="vdb", name=f"hostsnap-{B}")
    # What libvirt and Ceph show: both disks switched, the RBD snapshot made.
    host.chains = {
        "vda": [plan["overlays"]["vda"], str(base)],
        "vdb": [plan["rbd_overlays"]["vdb"]],
    }
    rbd.snaps = [f"hostsnap-{B}"]

    state, detail = recovered(svc)

    assert state == JobState.SUCCEEDED, detail
    assert host.calls == ["commit vdb", "pivot vdb"]  # vdb went back on RBD first
    assert host.chains["vdb"] == [] and rbd.snaps == [f"hostsnap-{B}"]
    job = svc.journal.get("job")
    assert job.result is not None
    assert [(d["target"], d["method"]) for d in job.result["disks"]] == [
        ("vda", "qcow2-overlay"),
        ("vdb", "rbd-short-freeze"),
    ]
    assert [s.name for s in job.steps][-2:] == ["merge-back", "merged-back"]


def test_a_job_of_the_current_release_killed_before_its_switch_is_taken_back(
    tmp_path: Path, base: Path
):
    host, rbd = MixedHost(str(base)), FakeRbd()
    svc = services(tmp_path, host, rbd, FakeGuest())
    plan = main_plan_for(base, svc.config.rbd_overlay_dir)
    svc.journal = journal_with_plan(svc.config.state_dir, plan, "overlays-created", "freeze")
    for overlay in (plan["overlays"]["vda"], plan["rbd_overlays"]["vdb"]):
        Path(overlay).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", overlay, "1M"], check=True)

    state, detail = recovered(svc)

    assert state == JobState.FAILED and "taken back" in detail
    assert host.calls == [] and host.chains == {"vda": [str(base)], "vdb": []}
    assert not Path(plan["overlays"]["vda"]).exists()
    assert not Path(plan["rbd_overlays"]["vdb"]).exists()


def test_each_disk_gets_its_strategy_when_planned(tmp_path: Path, base: Path):
    svc = services(tmp_path, MixedHost(str(base)), FakeRbd(), FakeGuest())
    xml = svc.host.xml("vm")
    vda, vdb = domain_xml.volumes("vm", xml)

    def chosen(live: bool, short_freeze: bool) -> list[type]:
        return [
            type(snapshot.disk_strategies.for_volume(svc, v, A, live, short_freeze, xml))
            for v in (vda, vdb)
        ]

    assert chosen(True, True) == [FileOverlay, RbdShortFreeze]
    assert chosen(True, False) == [FileOverlay, RbdFrozenAcross]
    assert chosen(False, False) == [Offline, RbdFrozenAcross]
    short = snapshot.disk_strategies.for_volume(svc, vdb, A, True, True, xml)
    assert isinstance(short, RbdShortFreeze)
    assert short.disk_xml == ET.tostring(ET.fromstring(RBD_DISK), encoding="unicode")
    assert Plan(True, (short,)).pending_layers("vm") == {}


def test_a_shut_off_domain_gets_its_overlay_in_the_definition_and_its_rbd_snapshot(
    tmp_path: Path, base: Path
):
    host, rbd = MixedHost(str(base), DomainState.SHUTOFF), FakeRbd()
    svc = services(tmp_path, host, rbd, FakeGuest())

    result = snapshot.create(svc, SnapshotRequest("vm", quiesce=Quiesce.REQUIRED))

    vda, vdb = sorted(result.disks, key=lambda d: d.target)
    assert (vda.method, vdb.method) == ("qcow2-overlay", "rbd-frozen-across")
    assert host.calls == ["define"] and host.chains["vda"] == [vda.active_image, str(base)]
    assert rbd.snaps == [f"hostsnap-{vdb.snapshot_id}"]
    plan = snapshot.read_plan(svc.journal.get(result.job_id))
    assert plan is not None and [type(d) for d in plan.disks] == [Offline, RbdFrozenAcross]
