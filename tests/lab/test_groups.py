"""Consistency groups on the lab: both guests (lab-qcow2 on a file, lab-rbd on Ceph) frozen,
snapshotted and thawed at one point through a real hostsnap-agent over mutual TLS; a failure
injected in one member leaves both thawed and no snapshot of the group behind; the hold's
watchdog and the agent's restart each thaw a guest nobody thawed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import libvirt
import pytest

from agent.config import AgentConfig
from agent.jobs import Journal
from controller.agents import AgentClient, TlsFiles
from controller.cloudstack import CloudStackClient, CloudStackConfig
from controller.groups import GroupMember, GroupResult, snapshot_group
from controller.inventory import Inventory
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.lab import point_at_lab

from .agent_process import AGENT, AgentProcess, start_agent
from .support import chain, disk_source, rbd_snapshots

DOMAINS = (QCOW2_DOMAIN, RBD_DOMAIN)
FAULT = f"fail:group-snapshot@{RBD_DOMAIN}"


def directory(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def finished(stub, job: pb.Job) -> pb.Job:  # type: ignore[no-untyped-def]
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300))[-1]


def frozen(stub, domain: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(stub.GetFreezeStatus(pb.GetFreezeStatusRequest(domain=domain), timeout=30).frozen)


def guest_frozen(conn: libvirt.virConnect, domain: str) -> bool:
    """Asked of the guest agent directly (no hostsnap agent in between)."""
    return guest_agent.fsfreeze_status(conn.lookupByName(domain)) == "frozen"


def named(stub, domain: str, name: str) -> set[str]:  # type: ignore[no-untyped-def]
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain), timeout=60)
    return {s.id for v in listed.volumes for s in v.snapshots if s.name == name}


def clean_up(stub, group_id: str, name: str) -> None:  # type: ignore[no-untyped-def]
    """Whatever the test did: the group's holds ended, its snapshots deleted."""
    for domain in DOMAINS:
        stub.ThawGroup(pb.GroupThawRequest(domain=domain, group_id=group_id), timeout=60)
    for domain in DOMAINS:
        for snapshot_id in named(stub, domain, name):
            request = pb.DeleteSnapshotRequest(snapshot_id=snapshot_id, domain=domain)
            deleted = finished(stub, stub.DeleteSnapshot(request, timeout=60))
            assert deleted.state == pb.JOB_STATE_SUCCEEDED, deleted.error.message
        assert not named(stub, domain, name), f"snapshots of {name} left on {domain}"
        assert not frozen(stub, domain), f"{domain} left frozen"


def run_group(
    lab: Lab, agent: AgentProcess, group_id: str, name: str, seconds: float = 25
) -> GroupResult:
    """The coordinator on both lab guests, checked first against the simulator's inventory
    (pointed at the lab's real guests)."""
    tls = TlsFiles(
        ca=agent.ca,
        cert=agent.directory / "ctl-operator.crt",
        key=agent.directory / "ctl-operator.key",
    )

    async def main() -> GroupResult:
        client = AgentClient(agent.endpoint, tls, call_timeout=60.0)
        with CloudStackSimulator() as sim:
            point_at_lab(sim, lab.paths, host_name="lab-host", host_ip="127.0.0.1")
            cloudstack = CloudStackClient(CloudStackConfig(sim.url, sim.api_key, sim.secret_key))
            inventory = await Inventory(cloudstack).refresh()
        try:
            return await snapshot_group(
                [GroupMember(client, domain) for domain in DOMAINS],
                deadline=time.monotonic() + seconds,
                group_id=group_id,
                name=name,
                inventory=inventory,
            )
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.fixture
def agent(lab: Lab, tmp_path: Path) -> Iterator[AgentProcess]:
    process = start_agent(lab, directory(tmp_path, "agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def test_a_group_of_both_lab_guests_is_snapshotted_application_consistent_and_thawed(
    lab: Lab, agent: AgentProcess
):
    stub = agent.stub("ctl-operator")
    group_id, name = f"lab-group-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    try:
        result = run_group(lab, agent, group_id, name)
        assert result.succeeded, result
        for member in result.members:
            assert (member.frozen, member.thawed, member.errors) == (True, True, ())
            assert len(member.snapshot_ids) == 1 and member.removed_ids == ()
            job = stub.GetJob(pb.GetJobRequest(job_id=member.snapshot_job_id), timeout=30)
            assert job.snapshot.consistency == pb.CONSISTENCY_APPLICATION, member.domain
            assert "held" in job.steps and "freeze" not in job.steps
            assert set(member.snapshot_ids) == named(stub, member.domain, name)
            assert not frozen(stub, member.domain)
        rbd_job = stub.GetJob(pb.GetJobRequest(job_id=result.members[1].snapshot_job_id))
        assert [d.method for d in rbd_job.snapshot.disks] == ["rbd-frozen-across"]
        audit = [json.loads(line) for line in agent.audit_log.read_text().splitlines()]
        for rpc in ("FreezeForGroup", "CreateSnapshot", "ThawGroup"):
            assert sum(
                (e["identity"], e["rpc"], e["result"]) == ("ctl-operator", rpc, "OK") for e in audit
            ) == len(DOMAINS), rpc
    finally:
        clean_up(stub, group_id, name)


def test_a_failure_injected_in_one_member_leaves_both_thawed_and_no_snapshot(
    lab: Lab, conn: libvirt.virConnect, agent_config: AgentConfig, tmp_path: Path
):
    process = start_agent(lab, directory(tmp_path, "agent"), fault=FAULT)
    stub = process.stub("ctl-operator")
    group_id, name = f"lab-group-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    qcow2 = conn.lookupByName(QCOW2_DOMAIN)
    active_before = disk_source(qcow2)
    chain_before = chain(active_before)
    try:
        result = run_group(lab, process, group_id, name)
        qcow2_member, rbd_member = result.members
        assert not result.succeeded and RBD_DOMAIN in result.error
        assert rbd_member.snapshot_state == "failed" and rbd_member.snapshot_ids == ()
        assert any("injected failure at step group-snapshot" in e for e in rbd_member.errors)
        assert len(qcow2_member.snapshot_ids) == 1
        assert qcow2_member.removed_ids == qcow2_member.snapshot_ids
        assert result.all_thawed and result.leftovers == ()
        for domain in DOMAINS:
            assert not frozen(stub, domain) and not guest_frozen(conn, domain)
            assert named(stub, domain, name) == set()
        assert disk_source(qcow2) == active_before
        assert chain(disk_source(qcow2)) == chain_before
        # The failed member's RBD snapshot was made, then undone.
        journal = Journal(agent_config.journal_path)
        try:
            plan = journal.get(rbd_member.snapshot_job_id).step("plan")
        finally:
            journal.close()
        assert plan is not None and plan.detail["rbd_snaps"]
        left = set(plan.detail["rbd_snaps"].values()) & set(rbd_snapshots(lab))
        assert not left, f"RBD snapshots of the failed member left: {left}"
    finally:
        try:
            clean_up(stub, group_id, name)
        finally:
            assert process.stop() == 0, (process.directory / "agent.log").read_text()


def test_the_holds_watchdog_thaws_a_guest_nobody_thaws(agent: AgentProcess):
    stub = agent.stub("ctl-operator")
    group_id = f"lab-watchdog-{uuid.uuid4().hex[:8]}"
    request = pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id=group_id, hold_seconds=2.0)
    try:
        for bad, code in (
            (
                pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id="no spaces", hold_seconds=2),
                "INVALID_ARGUMENT",
            ),
            (pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id=group_id), "INVALID_ARGUMENT"),
            (
                pb.GroupFreezeRequest(domain="no-such-vm", group_id=group_id, hold_seconds=2),
                "NOT_FOUND",
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.FreezeForGroup(bad, timeout=60)
            assert refused.value.code().name == code, bad
            assert not frozen(stub, QCOW2_DOMAIN)
        with pytest.raises(grpc.RpcError) as not_held:
            stub.CreateSnapshot(
                pb.CreateSnapshotRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60
            )
        assert not_held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("hostsnap-reason", "GROUP_NOT_HELD") in not_held.value.trailing_metadata()
        held = stub.FreezeForGroup(request, timeout=60)
        assert held.frozen and held.filesystems > 0 and frozen(stub, QCOW2_DOMAIN)
        assert stub.FreezeForGroup(request, timeout=60).job_id == held.job_id  # idempotent
        other = pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id="other", hold_seconds=2)
        with pytest.raises(grpc.RpcError) as held_already:
            stub.FreezeForGroup(other, timeout=60)
        assert held_already.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("hostsnap-reason", "DOMAIN_HELD") in held_already.value.trailing_metadata()
        deadline = time.monotonic() + 15
        while frozen(stub, QCOW2_DOMAIN):
            assert time.monotonic() < deadline, "the watchdog did not thaw the guest"
            time.sleep(0.2)
        job = finished(stub, pb.Job(id=held.job_id))
        assert job.state == pb.JOB_STATE_FAILED and job.error.reason == "FREEZE_DEADLINE_EXCEEDED"
        assert "watchdog-fired" in job.steps and "thawed" in job.steps
        # The hold has ended: a member's snapshot under it is refused and nothing is made.
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateSnapshot(
                pb.CreateSnapshotRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as again:
            stub.FreezeForGroup(request, timeout=60)
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        thawed = stub.ThawGroup(
            pb.GroupThawRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60
        )
        assert not thawed.frozen
    finally:
        stub.ThawGroup(pb.GroupThawRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60)


def test_an_agent_killed_while_holding_a_guest_thaws_it_on_restart(
    lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    first = start_agent(lab, directory(tmp_path, "first"))
    group_id = f"lab-restart-{uuid.uuid4().hex[:8]}"
    request = pb.GroupFreezeRequest(domain=RBD_DOMAIN, group_id=group_id, hold_seconds=60.0)
    second = None
    try:
        with pytest.raises(grpc.RpcError) as too_long:
            first.stub("ctl-operator").FreezeForGroup(request, timeout=60)
        assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # over group_hold_max
        request.hold_seconds = 25.0
        held = first.stub("ctl-operator").FreezeForGroup(request, timeout=60)
        assert held.frozen
        first.process.kill()
        first.process.wait(timeout=30)
        assert guest_frozen(conn, RBD_DOMAIN), "the guest thawed before the restart"
        second = start_agent(lab, directory(tmp_path, "second"))
        stub = second.stub("ctl-operator")
        assert not frozen(stub, RBD_DOMAIN) and not guest_frozen(conn, RBD_DOMAIN)
        job = stub.GetJob(pb.GetJobRequest(job_id=held.job_id), timeout=30)
        assert job.state == pb.JOB_STATE_FAILED and job.error.reason == "INTERRUPTED"
        assert "thawed" in job.steps
    finally:
        end_killed_agent(conn, RBD_DOMAIN, first, second)


def test_an_agent_killed_at_a_members_switch_leaves_the_guest_thawed_and_no_snapshot(
    lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    """Killed at group-snapshot: the member's disks switched, its guest held frozen by the
    group. The restarted agent takes the switch back and thaws the guest."""
    first = start_agent(lab, directory(tmp_path, "first"), fault=f"group-snapshot@{QCOW2_DOMAIN}")
    group_id, name = f"lab-kill-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    qcow2 = conn.lookupByName(QCOW2_DOMAIN)
    active_before = disk_source(qcow2)
    chain_before = chain(active_before)
    second = None
    try:
        stub = first.stub("ctl-operator")
        held = stub.FreezeForGroup(
            pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id=group_id, hold_seconds=25.0),
            timeout=60,
        )
        assert held.frozen
        create = pb.CreateSnapshotRequest(domain=QCOW2_DOMAIN, group_id=group_id, name=name)
        with pytest.raises(grpc.RpcError):
            finished(stub, stub.CreateSnapshot(create, timeout=60))
        first.process.wait(timeout=30)
        assert guest_frozen(conn, QCOW2_DOMAIN), "the guest thawed before the restart"
        second = start_agent(lab, directory(tmp_path, "second"))
        stub = second.stub("ctl-operator")
        assert not frozen(stub, QCOW2_DOMAIN) and not guest_frozen(conn, QCOW2_DOMAIN)
        assert named(stub, QCOW2_DOMAIN, name) == set()
        assert disk_source(qcow2) == active_before
        assert chain(active_before) == chain_before
        job = stub.GetJob(pb.GetJobRequest(job_id=held.job_id), timeout=30)
        assert job.state == pb.JOB_STATE_FAILED and job.error.reason == "INTERRUPTED"
    finally:
        end_killed_agent(conn, QCOW2_DOMAIN, first, second)


def test_a_guest_held_by_an_agent_killed_is_thawed_by_the_units_stop_post_command(
    lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    """What the unit's ExecStopPost= runs after a SIGKILL (systemd does not run here)."""
    agent = start_agent(lab, directory(tmp_path, "agent"))
    config = agent.directory / "agent.toml"
    thaw = [AGENT, "--config", str(config), "--thaw-after-exit"]
    request = pb.GroupFreezeRequest(
        domain=QCOW2_DOMAIN, group_id=f"lab-exit-{uuid.uuid4().hex[:8]}", hold_seconds=25.0
    )
    second = None
    try:
        held = agent.stub("ctl-operator").FreezeForGroup(request, timeout=60)
        assert held.frozen
        refused = subprocess.run(thaw, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, refused.stderr
        assert "an agent runs" in refused.stderr and guest_frozen(conn, QCOW2_DOMAIN)

        agent.process.kill()
        killed = time.monotonic()
        agent.process.wait(timeout=30)
        stop_post = subprocess.run(thaw, capture_output=True, text=True, timeout=60)
        thawed_after = time.monotonic() - killed
        assert stop_post.returncode == 0, stop_post.stderr
        assert not guest_frozen(conn, QCOW2_DOMAIN)
        print(f"frozen {thawed_after:.2f} s after the agent's SIGKILL")
        journal = Journal(lab.agent_state / "journal.sqlite")
        step = journal.get(held.job_id).step("thawed")
        assert step is not None and step.detail["by"] == "thaw-after-exit"

        second = start_agent(lab, directory(tmp_path, "second"))
        job = second.stub("ctl-operator").GetJob(pb.GetJobRequest(job_id=held.job_id), timeout=30)
        assert job.state == pb.JOB_STATE_FAILED and job.error.reason == "INTERRUPTED"
        assert not guest_frozen(conn, QCOW2_DOMAIN)
    finally:
        end_killed_agent(conn, QCOW2_DOMAIN, agent, second)


def end_killed_agent(
    conn: libvirt.virConnect, domain: str, killed: AgentProcess, second: AgentProcess | None
) -> None:
    """After a test that kills an agent, whatever failed: no agent left running, the guest
    thawed (only ours could have frozen it), the restarted agent stopped cleanly."""
    if killed.process.poll() is None:
        killed.process.kill()
        killed.process.wait(timeout=30)
    if guest_frozen(conn, domain):
        conn.lookupByName(domain).fsThaw()
    if second is not None:
        assert second.stop() == 0, (second.directory / "agent.log").read_text()


def snapshot_ids(stub, domain: str) -> set[str]:  # type: ignore[no-untyped-def]
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain), timeout=60)
    return {s.id for v in listed.volumes for s in v.snapshots}


def test_a_members_snapshot_asked_again_with_its_key_after_thaw_group_returns_the_same_job(
    agent: AgentProcess,
):
    """The reply to CreateSnapshot was lost and the group thawed: the retry with the same
    idempotency key still learns of the snapshot; another key under the same hold is refused."""
    stub = agent.stub("ctl-operator")
    group_id, name = f"lab-retry-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    create = pb.CreateSnapshotRequest(
        domain=QCOW2_DOMAIN, group_id=group_id, name=name, idempotency_key=key
    )
    try:
        held = stub.FreezeForGroup(
            pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id=group_id, hold_seconds=25.0),
            timeout=60,
        )
        assert held.frozen
        job = finished(stub, stub.CreateSnapshot(create, timeout=60))
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
        assert job.snapshot.consistency == pb.CONSISTENCY_APPLICATION
        assert "frozen-confirmed" in job.steps
        other_key = pb.CreateSnapshotRequest(
            domain=QCOW2_DOMAIN, group_id=group_id, name=name, idempotency_key=uuid.uuid4().hex
        )
        with pytest.raises(grpc.RpcError) as used:
            stub.CreateSnapshot(other_key, timeout=60)
        assert used.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("hostsnap-reason", "GROUP_HOLD_USED") in used.value.trailing_metadata()
        thawed = stub.ThawGroup(
            pb.GroupThawRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60
        )
        assert not thawed.frozen
        again = stub.CreateSnapshot(create, timeout=60)
        assert again.id == job.id and again.state == pb.JOB_STATE_SUCCEEDED
        assert [d.snapshot_id for d in again.snapshot.disks] == [
            d.snapshot_id for d in job.snapshot.disks
        ]
        assert named(stub, QCOW2_DOMAIN, name) == {d.snapshot_id for d in job.snapshot.disks}
    finally:
        clean_up(stub, group_id, name)


def test_a_guest_thawed_behind_the_agents_back_fails_its_snapshot_and_leaves_nothing(
    agent: AgentProcess, conn: libvirt.virConnect
):
    """Thawed through its guest agent between FreezeForGroup and CreateSnapshot: the agent
    finds it thawed after the switch, fails the job and undoes it."""
    stub = agent.stub("ctl-operator")
    group_id, name = f"lab-thawed-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    dom = conn.lookupByName(QCOW2_DOMAIN)
    ids_before = snapshot_ids(stub, QCOW2_DOMAIN)
    active_before = disk_source(dom)
    chain_before = chain(active_before)
    try:
        held = stub.FreezeForGroup(
            pb.GroupFreezeRequest(domain=QCOW2_DOMAIN, group_id=group_id, hold_seconds=25.0),
            timeout=60,
        )
        assert held.frozen and guest_frozen(conn, QCOW2_DOMAIN)
        guest_agent.command(dom, "guest-fsfreeze-thaw")
        assert not guest_frozen(conn, QCOW2_DOMAIN)
        create = pb.CreateSnapshotRequest(domain=QCOW2_DOMAIN, group_id=group_id, name=name)
        job = finished(stub, stub.CreateSnapshot(create, timeout=60))
        assert job.state == pb.JOB_STATE_FAILED
        assert job.error.reason == "GUEST_THAWED_DURING_GROUP", job.error.message
        assert "switch-active" in job.steps and "undo" in job.steps
        assert snapshot_ids(stub, QCOW2_DOMAIN) == ids_before
        assert disk_source(dom) == active_before
        assert chain(disk_source(dom)) == chain_before
        thawed = stub.ThawGroup(
            pb.GroupThawRequest(domain=QCOW2_DOMAIN, group_id=group_id), timeout=60
        )
        assert not thawed.frozen and not guest_frozen(conn, QCOW2_DOMAIN)
    finally:
        try:
            clean_up(stub, group_id, name)
        finally:
            if guest_frozen(conn, QCOW2_DOMAIN):  # only ours could be: thaw it whatever failed
                dom.fsThaw()
