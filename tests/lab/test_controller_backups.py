"""A policy that backs up, end to end: `hostsnap-controller serve` against the real agent; a
policy with `--backup` and `--keep-backups 2` snapshots both lab guests and has each
snapshot backed up to the agent's target (a restic repository in a directory): full, then
incremental, then full again once the chain is as long as kept, and the old chain deleted
by retention; `hostsnap-controller snapshots` shows them BackedUp, the reconcile pass finds
no snapshot missing its backup, and `hostsnap-controller restore` rebuilds the newest into a
new RBD image identical to its snapshot."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.lab import point_at_lab

from .agent_process import AgentProcess, start_agent
from .controller_support import (
    controller,
    controller_json,
    delete_snapshots_named,
    serve,
    stop,
    write_config,
)
from .test_backup_cli import hostsnap

POLICY_PREFIX = "policy-"


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("controller-backup-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def backups_of(stub, domain: str) -> list[pb.Backup]:  # type: ignore[no-untyped-def]
    request = pb.ListBackupsRequest(target="lab", domain=domain)
    return list(stub.ListBackups(request, timeout=120).backups)


def test_a_policy_with_backup_backs_each_snapshot_up_incrementally_and_keeps_two_per_volume(
    agent: AgentProcess, lab: Lab, tmp_path: Path
):
    repository = agent.directory / "secondary"
    added = hostsnap(agent, "backup", "target", "add", "lab", "--repository", str(repository))
    assert added.returncode == 0, added.stderr
    stub = agent.stub("ctl-operator")
    with CloudStackSimulator() as sim:
        qcow2_vm, rbd_vm = point_at_lab(sim, lab.paths)
        config = write_config(tmp_path, sim, agent, f"sqlite:///{tmp_path / 'controller.db'}")
        serving = serve(config, "ctl-lab", tmp_path / "serve.log")
        try:
            made = controller(
                config, "policies", "add", "lab-backed-up", "--interval", "DAILY",
                "--schedule", "00:04", "--maxsnaps", "2", "--vm", qcow2_vm.id,
                "--vm", rbd_vm.id, "--backup", "lab", "--keep-backups", "2",
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            chains: dict[str, list[list[str]]] = {QCOW2_DOMAIN: [], RBD_DOMAIN: []}

            for _ in range(4):
                run = controller_json(config, "run", "lab-backed-up", "--wait")
                assert run["state"] == "succeeded", run
                kinds = sorted(j["kind"] for j in run["jobs"])
                assert kinds == ["backup", "backup", "snapshot", "snapshot"], kinds
                for domain, seen in chains.items():
                    seen.append([b.parent_id for b in backups_of(stub, domain)])

            listed = controller_json(config, "snapshots")
            assert [s["state"] for s in listed] == ["BackedUp"] * 8, listed
            for domain, seen in chains.items():
                # Full, incremental, full again (the chain was 2 long), incremental; once the
                # last run ended, the first chain went.
                assert [len(parents) for parents in seen[:3]] == [1, 2, 3], (domain, seen)
                assert seen[2][2] == "" and seen[1][1] != "", (domain, seen)
            deadline = time.monotonic() + 120
            while any(len(backups_of(stub, d)) > 2 for d in chains):
                assert time.monotonic() < deadline, {d: backups_of(stub, d) for d in chains}
                time.sleep(1)
            for domain in chains:
                full, incremental = backups_of(stub, domain)
                assert (full.parent_id, incremental.parent_id) == ("", full.id), domain
                assert full.snapshot_name.startswith(POLICY_PREFIX)
            report = controller_json(config, "reconcile")
            assert [b for b in report["backups"] if b["problem"]] == [], report["backups"]
            newest = backups_of(stub, RBD_DOMAIN)[-1]
            image = f"rbd/ctl-restored-{newest.id[:8]}"
            restored = controller_json(
                config, "restore", newest.id, "--target", "lab", "--to", image
            )
            assert restored["job"]["state"] == "succeeded", restored
            snapshot = f"rbd/{RBD_DOMAIN}@hostsnap-{newest.snapshot_id}"
            assert identical(lab, snapshot, image)
        finally:
            stop(serving)
            delete_snapshots_named(agent, (QCOW2_DOMAIN, RBD_DOMAIN), POLICY_PREFIX)
            for image in rbd_images(lab):
                if image.startswith("ctl-restored-"):
                    subprocess.run(["rbd", "-c", str(lab.ceph_conf), "rm", image], check=False)


def identical(lab: Lab, snapshot: str, image: str) -> bool:
    conf = f":conf={lab.ceph_conf}"
    compared = subprocess.run(
        ["qemu-img", "compare", "-U", f"rbd:{snapshot}{conf}", f"rbd:{image}{conf}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return compared.returncode == 0


def rbd_images(lab: Lab) -> list[str]:
    listed = subprocess.run(
        ["rbd", "-c", str(lab.ceph_conf), "ls", "rbd"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()
