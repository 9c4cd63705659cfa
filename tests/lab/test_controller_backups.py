"""A policy that backs up, end to end: `hostsnap-controller serve` against the real agent; a
policy with `--backup` snapshots both lab guests and has each snapshot backed up to the
agent's target (a restic repository in a directory), the second run's backups incremental
over the first's; `hostsnap-controller snapshots` shows them BackedUp."""

from __future__ import annotations

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


def test_a_policy_with_backup_makes_each_snapshot_backed_up_incrementally(
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
                "--vm", rbd_vm.id, "--backup", "lab",
            )  # fmt: skip
            assert made.returncode == 0, made.stderr

            runs = [controller_json(config, "run", "lab-backed-up", "--wait") for _ in range(2)]

            for run in runs:
                assert run["state"] == "succeeded", run
                kinds = sorted(j["kind"] for j in run["jobs"])
                assert kinds == ["backup", "backup", "snapshot", "snapshot"], kinds
            listed = controller_json(config, "snapshots")
            assert [s["state"] for s in listed] == ["BackedUp"] * 4, listed
            assert {s["backup_target"] for s in listed} == {"lab"}
            for domain in (QCOW2_DOMAIN, RBD_DOMAIN):
                found = stub.ListBackups(
                    pb.ListBackupsRequest(target="lab", domain=domain), timeout=120
                ).backups
                assert [b.snapshot_name.startswith(POLICY_PREFIX) for b in found] == [True] * 2
                first, second = found
                assert (first.parent_id, second.parent_id) == ("", first.id), domain
        finally:
            stop(serving)
            delete_snapshots_named(agent, (QCOW2_DOMAIN, RBD_DOMAIN), POLICY_PREFIX)
