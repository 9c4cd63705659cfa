"""The `hostsnap` CLI drives a whole cycle against a running agent, for people and scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hostsnap_lab.lab import Lab

from .agent_process import AgentProcess, start_agent
from .support import has_marker, start, stop, write_marker

HOSTSNAP = str(Path(sys.executable).parent / "hostsnap")


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("cli-agent"))
    yield process
    assert process.stop() == 0


def hostsnap(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOSTSNAP, "--socket", str(agent.socket), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_cycle_with_json_and_tables(agent: AgentProcess, conn: libvirt.virConnect):
    dom = conn.lookupByName("lab-qcow2")
    write_marker(dom, "cli-before")
    created = hostsnap(agent, "--json", "snapshot", "create", "lab-qcow2", "--quiesce", "required")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["snapshot"]["consistency"] == "CONSISTENCY_APPLICATION"
    snapshot_id = job["snapshot"]["disks"][0]["snapshot_id"]

    listed = hostsnap(agent, "snapshots", "lab-qcow2")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "DISK"]
    assert any(row.startswith(snapshot_id) and "application" in row for row in rows)
    tree = hostsnap(agent, "chain", "lab-qcow2")
    assert f"snapshot {snapshot_id}" in tree.stdout and "active" in tree.stdout

    write_marker(dom, "cli-after")
    running = hostsnap(agent, "revert", snapshot_id)
    assert running.returncode == 4  # refused in this state
    assert "revert needs it shut off" in running.stderr
    stop(dom)
    try:
        reverted = hostsnap(agent, "revert", snapshot_id)
        assert reverted.returncode == 0, reverted.stderr
        assert "revert of lab-qcow2 succeeded" in reverted.stdout
    finally:
        start(dom)
    assert has_marker(dom, "cli-before") and not has_marker(dom, "cli-after")

    deleted = hostsnap(agent, "delete", snapshot_id)
    assert deleted.returncode == 0, deleted.stderr
    assert hostsnap(agent, "delete", snapshot_id).returncode == 3  # not found any more
    jobs = json.loads(hostsnap(agent, "--json", "jobs", "--domain", "lab-qcow2").stdout)
    assert [j["operation"] for j in jobs[:3]] == ["delete", "revert", "snapshot"]


def test_chain_shows_what_consolidate_merges_and_consolidate_merges_it_live(
    agent: AgentProcess, conn: libvirt.virConnect
):
    dom = conn.lookupByName("lab-qcow2")
    taken = []
    for n in range(3):
        write_marker(dom, f"cli-chain-{n}")
        created = hostsnap(agent, "--json", "snapshot", "create", "lab-qcow2", "--quiesce", "none")
        taken.append(json.loads(created.stdout)["snapshot"]["disks"][0])
    for disk in taken[:2]:
        forgot = hostsnap(agent, "delete", "--defer-merge", disk["snapshot_id"])
        assert forgot.returncode == 0, forgot.stderr
    before = json.loads(hostsnap(agent, "--json", "chain", "lab-qcow2", "vda").stdout)[0]
    assert before["mergeable"] >= 2 and not before["over_limit"]
    drawn = hostsnap(agent, "chain", "lab-qcow2").stdout
    assert f"snapshot {taken[2]['snapshot_id']}" in drawn
    assert f"depth {before['depth']} of at most 16" in drawn and "consolidate merges them" in drawn

    merged = hostsnap(agent, "--json", "consolidate", "lab-qcow2", "--bandwidth", "64")
    assert merged.returncode == 0, merged.stderr
    (disk,) = json.loads(merged.stdout)["chain"]["disks"]
    after = json.loads(hostsnap(agent, "--json", "chain", "lab-qcow2", "vda").stdout)[0]
    assert disk["depth_after"] == after["depth"] == before["depth"] - before["mergeable"]
    assert after["merge_runs"] == []
    assert any(taken[2]["snapshot_id"] in layer["snapshot_ids"] for layer in after["layers"])
    assert all(has_marker(dom, f"cli-chain-{n}") for n in range(3))
    refused = hostsnap(agent, "flatten", "lab-qcow2")
    assert refused.returncode == 4 and "[SNAPSHOTS_WOULD_BE_LOST]" in refused.stderr


def test_cli_errors_are_clear_and_their_exit_codes_mean_something(agent: AgentProcess):
    unknown = hostsnap(agent, "volumes", "no-such-vm")
    assert unknown.returncode == 3
    assert (
        "no domain named 'no-such-vm'" in unknown.stderr and "[DOMAIN_NOT_FOUND]" in unknown.stderr
    )
    bad = hostsnap(agent, "snapshot", "create", "../etc")
    assert bad.returncode == 2
    down = subprocess.run(
        [HOSTSNAP, "--socket", "/nonexistent/agent.sock", "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 5 and "is hostsnap-agent running" in down.stderr


def test_freeze_status_and_thaw_as_rescue(agent: AgentProcess, conn: libvirt.virConnect):
    dom = conn.lookupByName("lab-rbd")
    dom.fsFreeze()  # as a broken tool would leave it
    try:
        assert hostsnap(agent, "freeze-status", "lab-rbd").stdout.strip() == "lab-rbd: frozen"
    finally:
        thawed = hostsnap(agent, "thaw", "lab-rbd")
    assert thawed.returncode == 0 and thawed.stdout.strip() == "lab-rbd: thawed"


def test_direct_thaw_rescues_a_frozen_guest_while_no_agent_runs(
    lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{lab.agent_state}"\nceph_conf = "{lab.ceph_conf}"\n'
        f'[listen]\nunix_socket = "{tmp_path / "nobody-listens.sock"}"\n'
    )
    direct = [HOSTSNAP, "--direct", "--config", str(config)]
    dom = conn.lookupByName("lab-qcow2")
    dom.fsFreeze()
    try:
        status = subprocess.run(
            [*direct, "freeze-status", "lab-qcow2"], capture_output=True, text=True
        )
        assert status.stdout.strip() == "lab-qcow2: frozen", status.stderr
    finally:
        thawed = subprocess.run([*direct, "thaw", "lab-qcow2"], capture_output=True, text=True)
    assert thawed.returncode == 0, thawed.stderr
    assert thawed.stdout.strip() == "lab-qcow2: thawed"
    snapshots = subprocess.run(
        [*direct, "--json", "snapshots", "lab-qcow2"], capture_output=True, text=True
    )
    assert (
        snapshots.returncode == 0 and json.loads(snapshots.stdout)[0]["volume"]["target"] == "vda"
    )
    refused = subprocess.run([*direct, "status"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--direct works for" in refused.stderr


def test_revert_with_stop_shuts_the_domain_down_first(
    agent: AgentProcess, conn: libvirt.virConnect
):
    dom = conn.lookupByName("lab-rbd")
    write_marker(dom, "before-stop-revert")
    created = json.loads(hostsnap(agent, "--json", "snapshot", "create", "lab-rbd").stdout)
    write_marker(dom, "after-stop-revert")
    try:
        reverted = hostsnap(
            agent, "--json", "revert", "--stop", created["snapshot"]["disks"][0]["snapshot_id"]
        )
        assert reverted.returncode == 0, reverted.stderr
        steps = json.loads(reverted.stdout)["steps"]
        assert steps[:2] == ["stop-domain", "domain-stopped"]
        assert not dom.isActive()
    finally:
        start(dom)
    assert has_marker(dom, "before-stop-revert") and not has_marker(dom, "after-stop-revert")


def test_doctor_reports_each_check_and_fails_on_a_pool_without_headroom(lab: Lab, tmp_path: Path):
    config = tmp_path / "agent.toml"
    base = f'[agent]\nstate_dir = "{lab.agent_state}"\nceph_conf = "{lab.ceph_conf}"\n'
    config.write_text(base)
    healthy = subprocess.run(
        [HOSTSNAP, "--config", str(config), "--json", "doctor"], capture_output=True, text=True
    )
    checks = {c["name"]: c for c in json.loads(healthy.stdout)}
    assert healthy.returncode == 0, healthy.stdout
    assert checks["libvirt"]["verdict"] == "ok"
    assert checks["guest agent lab-qcow2"]["verdict"] == "ok"
    assert checks["ceph"]["verdict"] == "ok"
    assert checks[f"pool {lab.paths.pool}"]["verdict"] == "ok"
    assert checks["rbd overlays"]["verdict"] == "ok"
    config.write_text(base + "pool_headroom = 1000000.0\n")
    full = subprocess.run(
        [HOSTSNAP, "--config", str(config), "doctor"], capture_output=True, text=True
    )
    assert full.returncode == 1
    assert any(
        line.startswith(f"pool {lab.paths.pool}") and "failure" in line
        for line in full.stdout.splitlines()
    )


def test_cancel_stops_a_job_at_its_next_safe_point(agent: AgentProcess, conn: libvirt.virConnect):
    dom = conn.lookupByName("lab-rbd")
    created = json.loads(hostsnap(agent, "--json", "snapshot", "create", "lab-rbd").stdout)
    write_marker(dom, "kept-by-cancel")
    snapshot_id = created["snapshot"]["disks"][0]["snapshot_id"]
    try:
        # The guest has no ACPI handler: the job spends stop_timeout (3 s) stopping it.
        started = json.loads(
            hostsnap(agent, "--json", "revert", "--stop", "--no-wait", snapshot_id).stdout
        )
        cancelled = hostsnap(agent, "--json", "cancel", started["id"])
        assert cancelled.returncode == 0, cancelled.stderr  # the cancel did what it was asked
        job = json.loads(cancelled.stdout)
        assert job["state"] == "JOB_STATE_CANCELLED"
        assert job["error"]["reason"] == "CANCELLED"
        assert "cancelled before the revert" in job["error"]["message"]
        again = hostsnap(agent, "cancel", started["id"])
        assert again.returncode == 4 and "has already ended (cancelled)" in again.stderr
    finally:
        start(dom)
    assert has_marker(dom, "kept-by-cancel")  # nothing was rolled back


def test_stats_for_people_and_scripts(agent: AgentProcess):
    human = hostsnap(agent, "stats", "--interval", "1")
    assert human.returncode == 0, human.stderr
    assert any(line.startswith("lab-qcow2") and "vda" in line for line in human.stdout.splitlines())
    assert "Package id 0" in human.stdout  # the test's hwmon tree
    machine = json.loads(hostsnap(agent, "--json", "stats", "--interval", "1").stdout)
    assert {d["domain"] for d in machine["domain_disks"]} >= {"lab-qcow2", "lab-rbd"}
    assert machine["temperatures"][0]["celsius"] == 47.0


def test_doctor_warns_of_a_short_freeze_overlay_left_behind(lab: Lab, tmp_path: Path):
    state = tmp_path / "state"
    left = state / "rbd-overlays" / "lab-rbd-vda-0123.qcow2"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"")
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{state}"\nceph_conf = "{lab.ceph_conf}"\n')
    done = subprocess.run(
        [HOSTSNAP, "--config", str(config), "--json", "doctor"], capture_output=True, text=True
    )
    check = {c["name"]: c for c in json.loads(done.stdout)}["rbd overlays"]
    assert check["verdict"] == "warning" and str(left) in check["detail"]
