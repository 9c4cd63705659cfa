"""The controller end to end, as an operator runs it: the CloudStack simulator's inventory
points at the lab's two real guests; `hostsnap-controller serve` runs as its own process and
reaches the real agent over mutual TLS; a policy added and run with the command line
snapshots both guests; CloudStack's record of the qcow2 volume's path is moved to the new
active image (and the snapshot's tags written); a stop and start as CloudStack does it, with
a domain defined afresh from CloudStack's path, boots with every write kept. A second run
of the policy (maxsnaps 1) has the first run's snapshots deleted by retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt
import pytest

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab import domains
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN
from tests.cloudstack_sim import CloudStackSimulator
from tests.cloudstack_sim.lab import point_at_lab

from . import support
from .agent_process import AgentProcess, start_agent
from .controller_support import (
    controller,
    controller_json,
    delete_snapshots_named,
    serve,
    stop,
    tags_of,
    volumes_of,
    write_config,
)

POLICY_PREFIX = "policy-"


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("controller-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def restart_as_cloudstack_does(conn: libvirt.virConnect, lab: Lab, path: str) -> None:
    """CloudStack stops a VM by destroying its domain and starts it from domain XML it
    generates from its own records: the disk is the pool's directory and the volume's path."""
    domains.remove(conn, QCOW2_DOMAIN)
    disk = f"""<disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(lab.paths.pool / path))}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    domains.define_and_start(conn, lab.paths, domains.LabDomain(QCOW2_DOMAIN, disk))
    support.wait_for_agent(conn.lookupByName(QCOW2_DOMAIN))


def policy_snapshots(stub) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    names = {}
    for domain in (QCOW2_DOMAIN, RBD_DOMAIN):
        listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain), timeout=60)
        names[domain] = [
            s.name for v in listed.volumes for s in v.snapshots if s.name.startswith(POLICY_PREFIX)
        ]
    return names


def wait_for_names(stub, wanted: set[str], timeout: float) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        names = policy_snapshots(stub)
        if all(set(n) == wanted for n in names.values()) or time.monotonic() > deadline:
            return names
        time.sleep(1)


def wait_for_no_work(config: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        jobs = controller_json(config, "status")["jobs"]
        busy = {k: jobs[k] for k in ("pending", "dispatching", "running") if jobs[k]}
        if not busy:
            return
        assert time.monotonic() < deadline, f"jobs still at work: {busy}"
        time.sleep(1)


def test_policy_runs_snapshot_both_guests_keep_maxsnaps_and_cloudstack_restarts_with_the_data(
    agent: AgentProcess, lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    stub = agent.stub("ctl-operator")
    qcow2_dom = conn.lookupByName(QCOW2_DOMAIN)
    with CloudStackSimulator() as sim:
        qcow2_vm, rbd_vm = point_at_lab(sim, lab.paths)
        (qcow2_volume,), (rbd_volume,) = volumes_of(sim, qcow2_vm), volumes_of(sim, rbd_vm)
        recorded_before = qcow2_volume.path
        config = write_config(tmp_path, sim, agent, f"sqlite:///{tmp_path / 'controller.db'}")
        serving = serve(config, "ctl-lab", tmp_path / "serve.log")
        try:
            added = controller(
                config, "policies", "add", "lab-keep-1", "--interval", "DAILY",
                "--schedule", "00:03", "--maxsnaps", "1", "--quiesce", "required",
                "--vm", qcow2_vm.id, "--vm", rbd_vm.id,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            (planned,) = controller_json(config, "plan")["plan"]["policies"]
            assert {r["instance_name"] for r in planned["runs"]} == {QCOW2_DOMAIN, RBD_DOMAIN}
            support.write_marker(qcow2_dom, "before-runs")

            first = controller_json(config, "run", "lab-keep-1", "--wait")

            assert first["state"] == "succeeded", first
            assert len(first["jobs"]) == 2
            # The qcow2 volume's active image moved to the new overlay; CloudStack records it.
            (disk,) = stub.ListVolumes(pb.ListVolumesRequest(domain=QCOW2_DOMAIN)).volumes
            assert disk.location != str(lab.paths.pool / (recorded_before or ""))
            assert qcow2_volume.path == Path(disk.location).name
            assert rbd_volume.path == "lab-rbd"  # an RBD snapshot moves nothing
            for volume in (qcow2_volume, rbd_volume):
                tags = tags_of(sim, volume.id)
                assert tags.get("hostsnap-consistency") == "application", tags
                assert tags.get("hostsnap-last-snapshot"), tags
            support.write_marker(qcow2_dom, "between-runs")

            second = controller_json(config, "run", "lab-keep-1", "--wait")

            assert second["state"] == "succeeded", second
            # maxsnaps 1: once the leader ends the run, the first run's snapshots are deleted.
            first_name = first["jobs"][0]["params"]["name"]
            second_name = second["jobs"][0]["params"]["name"]
            names = wait_for_names(stub, {second_name}, timeout=180)
            assert names == {QCOW2_DOMAIN: [second_name], RBD_DOMAIN: [second_name]}, first_name
            wait_for_no_work(config, timeout=60)
            (disk,) = stub.ListVolumes(pb.ListVolumesRequest(domain=QCOW2_DOMAIN)).volumes
            assert qcow2_volume.path == Path(disk.location).name
            report = controller_json(config, "reconcile")
            rows = {r["volume_id"]: r for r in report["volumes"]}
            for volume in (qcow2_volume, rbd_volume):
                assert rows[volume.id]["status"] == "in-line", rows[volume.id]
            status = controller_json(config, "status")
            assert status["leader"]["holder"] == "ctl-lab"
            assert status["open_intents"] == 0
            assert status["jobs"]["succeeded"] == 6  # 2 runs of 2 VMs, 2 deletes
            support.write_marker(qcow2_dom, "after-runs")  # lands in the newest overlay only
            stop(serving)

            restart_as_cloudstack_does(conn, lab, qcow2_volume.path or "")

            qcow2_dom = conn.lookupByName(QCOW2_DOMAIN)
            for marker in ("before-runs", "between-runs", "after-runs"):
                assert support.has_marker(qcow2_dom, marker), marker
        finally:
            stop(serving)
            delete_snapshots_named(agent, (QCOW2_DOMAIN, RBD_DOMAIN), POLICY_PREFIX)


def test_a_group_snapshot_of_both_guests_from_the_command_line_is_recorded_in_cloudstack(
    agent: AgentProcess, lab: Lab, conn: libvirt.virConnect, tmp_path: Path
):
    stub = agent.stub("ctl-operator")
    with CloudStackSimulator() as sim:
        qcow2_vm, rbd_vm = point_at_lab(sim, lab.paths)
        (qcow2_volume,), (rbd_volume,) = volumes_of(sim, qcow2_vm), volumes_of(sim, rbd_vm)
        groups = f'\n[[groups]]\nname = "lab-pair"\nvms = ["{qcow2_vm.id}", "{rbd_vm.id}"]\n'
        config = write_config(
            tmp_path, sim, agent, f"sqlite:///{tmp_path / 'controller.db'}", groups=groups
        )
        try:
            (listed,) = controller_json(config, "groups")
            assert [m["instance_name"] for m in listed["members"]] == [QCOW2_DOMAIN, RBD_DOMAIN]

            taken = controller_json(config, "groups", "snapshot", "lab-pair")

            result = taken["result"]
            assert result["succeeded"], result
            assert taken["cloudstack_problems"] == []
            for member in result["members"]:
                assert (member["frozen"], member["thawed"]) == (True, True), member
                assert len(member["snapshot_ids"]) == 1 and not member["removed_ids"]
            for domain in (QCOW2_DOMAIN, RBD_DOMAIN):
                assert not stub.GetFreezeStatus(pb.GetFreezeStatusRequest(domain=domain)).frozen
            (disk,) = stub.ListVolumes(pb.ListVolumesRequest(domain=QCOW2_DOMAIN)).volumes
            assert qcow2_volume.path == Path(disk.location).name  # CloudStack was told
            for volume in (qcow2_volume, rbd_volume):
                assert tags_of(sim, volume.id).get("hostsnap-consistency") == "application"
        finally:
            delete_snapshots_named(agent, (QCOW2_DOMAIN, RBD_DOMAIN), "group-lab-pair-")
