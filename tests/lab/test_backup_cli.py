"""Backups through a running agent and the `hostsnap` CLI, as an administrator runs them: a
target added on the host (its key made, its repository initialised), a snapshot backed up
and listed, restored into a new RBD image identical to it, verified, deleted; refusals with
their exit codes; a viewer refused a backup; a backup restored through a second agent; the
backup in the agent's metrics."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import RBD_DOMAIN

from .agent_process import AgentProcess, start_agent

HOSTSNAP = str(Path(sys.executable).parent / "hostsnap")


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("backup-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def hostsnap(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            HOSTSNAP,
            "--socket",
            str(agent.socket),
            "--config",
            str(agent.directory / "agent.toml"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def scrape(agent: AgentProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{agent.metrics}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def made_at(made: dict[str, str]) -> float:
    when = datetime.datetime.fromisoformat(made["backed_up_at"].replace("Z", "+00:00"))
    return when.timestamp()


def test_a_snapshot_backed_up_listed_restored_verified_and_deleted_through_the_cli(
    lab: Lab, agent: AgentProcess
):
    repository = agent.directory / "secondary"
    added = hostsnap(agent, "backup", "target", "add", "lab", "--repository", str(repository))
    assert added.returncode == 0, added.stderr
    assert "keep a copy off this host" in added.stdout
    assert (agent.directory / "backup-targets" / "lab.key").stat().st_mode & 0o777 == 0o600
    created = hostsnap(agent, "--json", "snapshot", "create", RBD_DOMAIN)
    assert created.returncode == 0, created.stderr
    snapshot_id = json.loads(created.stdout)["snapshot"]["disks"][0]["snapshot_id"]
    image = f"rbd/cli-restored-{uuid.uuid4().hex[:8]}"
    try:
        done = hostsnap(agent, "--json", "backup", snapshot_id, "--target", "lab")
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)["backup"]
        assert made["snapshot_id"] == snapshot_id and made["sha256"]

        listed = hostsnap(agent, "backups", RBD_DOMAIN, "--target", "lab")
        assert listed.returncode == 0 and made["id"] in listed.stdout and "full" in listed.stdout
        scraped = scrape(agent)
        last = {
            labels["volume"]: when
            for labels, when in scraped["hostsnap_backup_last_success_timestamp_seconds"]
            if labels["target"] == "lab"
        }
        assert last[made["volume"]] == pytest.approx(made_at(made), abs=1e-3)
        counted = {labels["target"]: n for labels, n in scraped["hostsnap_backups_total"]}
        assert counted["lab"] >= 1
        durations = scraped["hostsnap_job_duration_seconds_count"]
        assert ({"operation": "backup", "result": "succeeded"}, 1.0) in durations

        restored = hostsnap(agent, "restore", made["id"], "--target", "lab", "--to", image)
        assert restored.returncode == 0, restored.stderr
        taken = f"rbd:rbd/{RBD_DOMAIN}@hostsnap-{snapshot_id}:conf={lab.ceph_conf}"
        compare = subprocess.run(
            ["qemu-img", "compare", "-U", taken, f"rbd:{image}:conf={lab.ceph_conf}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr

        again = hostsnap(agent, "restore", made["id"], "--target", "lab", "--to", image)
        assert again.returncode == 4, again.stdout + again.stderr
        assert "IMAGE_EXISTS" in again.stdout + again.stderr

        verified = hostsnap(agent, "backup", "verify", made["id"], "--target", "lab")
        assert verified.returncode == 0, verified.stderr
        assert "read back and matched" in verified.stdout

        deleted = hostsnap(agent, "backup", "delete", made["id"], "--target", "lab")
        assert deleted.returncode == 0, deleted.stderr
        after = hostsnap(agent, "--json", "backups", "--target", "lab")
        assert json.loads(after.stdout) == []
    finally:
        subprocess.run(["rbd", "-c", str(lab.ceph_conf), "rm", image], capture_output=True)
        hostsnap(agent, "delete", snapshot_id)


def test_refusals_have_their_codes_and_change_nothing(agent: AgentProcess):
    unknown = hostsnap(agent, "backups", "--target", "nowhere")
    assert unknown.returncode == 3 and "TARGET_NOT_FOUND" in unknown.stderr
    traversal = hostsnap(agent, "backups", "--target", "../etc")
    assert traversal.returncode == 2 and "INVALID_TARGET_NAME" in traversal.stderr
    bad_id = hostsnap(agent, "backup", "0" * 31 + "g", "--target", "nowhere")
    assert bad_id.returncode == 2
    viewer = agent.stub("ctl-viewer")
    with pytest.raises(grpc.RpcError) as refused:
        viewer.BackupSnapshot(pb.BackupSnapshotRequest(snapshot_id="0" * 32, target="lab"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_backup_made_through_one_agent_is_restored_through_another(
    lab: Lab, agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory
):
    """The second agent, with its own state directory and its own copy of the target's file
    and key, stands in for another host that reaches the same secondary storage."""
    repository = agent.directory / "shared-secondary"
    added = hostsnap(agent, "backup", "target", "add", "shared", "--repository", str(repository))
    assert added.returncode == 0, added.stderr
    created = hostsnap(agent, "--json", "snapshot", "create", RBD_DOMAIN)
    assert created.returncode == 0, created.stderr
    snapshot_id = json.loads(created.stdout)["snapshot"]["disks"][0]["snapshot_id"]
    second = tmp_path_factory.mktemp("second-host")
    other = start_agent(lab, second, state_dir=second / "state")
    try:
        made = hostsnap(agent, "--json", "backup", snapshot_id, "--target", "shared")
        assert made.returncode == 0, made.stderr
        backup_id = json.loads(made.stdout)["backup"]["id"]
        (second / "backup-targets").mkdir()
        for name in ("shared.toml", "shared.key"):
            shutil.copy2(agent.directory / "backup-targets" / name, second / "backup-targets")

        listed = hostsnap(other, "--json", "backups", "--target", "shared")
        assert listed.returncode == 0, listed.stderr
        assert [b["id"] for b in json.loads(listed.stdout)] == [backup_id]
        restored_file = second / "restored.qcow2"
        restored = hostsnap(
            other, "restore", backup_id, "--target", "shared", "--to", str(restored_file)
        )
        assert restored.returncode == 0, restored.stderr

        taken = f"rbd:rbd/{RBD_DOMAIN}@hostsnap-{snapshot_id}:conf={lab.ceph_conf}"
        compare = subprocess.run(
            ["qemu-img", "compare", "-U", taken, str(restored_file)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr
    finally:
        assert other.stop() == 0, (second / "agent.log").read_text()
        hostsnap(agent, "delete", snapshot_id)
