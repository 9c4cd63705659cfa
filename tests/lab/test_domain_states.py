"""A domain that does not run, or whose disk is gone, is a state of the host, not a failure
of the agent: every RPC about it answers with the status that says so, never INTERNAL, and
changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import grpc
import libvirt
import pytest

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab
from hostsnap_lab.run import run

from .agent_process import AgentProcess, start_agent
from .support import storage_state


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def define(conn: libvirt.virConnect, name: str, disk: Path) -> libvirt.virDomain:
    return conn.defineXML(
        f"""<domain type='qemu'><name>{name}</name><memory>65536</memory>
      <os><type arch='x86_64'>hvm</type></os><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file={quoteattr(str(disk))}/><target dev='vda' bus='virtio'/></disk>
      </devices></domain>"""
    )


@pytest.fixture(scope="module")
def shut_off(conn: libvirt.virConnect, lab: Lab) -> Iterator[dict[str, str]]:
    """Two defined domains that do not run: one with its disk, one whose disk is gone."""
    tag = uuid.uuid4().hex[:8]
    whole, gone = lab.paths.pool / f"shutoff-{tag}.qcow2", lab.paths.pool / f"gone-{tag}.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(whole), "16M"])
    domains = [
        define(conn, f"hostsnap-test-shutoff-{tag}", whole),
        define(conn, f"hostsnap-test-gone-{tag}", gone),
    ]
    try:
        yield {"whole": domains[0].name(), "gone": domains[1].name()}
    finally:
        for dom in domains:
            dom.undefine()
        whole.unlink()


Call = Callable[[Any, str], Any]
KEY = "idempotency_key"
CALLS: list[tuple[str, str, Call, str]] = [
    ("whole", "Thaw", lambda s, d: s.Thaw(pb.ThawRequest(domain=d)), "FAILED_PRECONDITION"),
    (
        "whole",
        "FreezeForGroup",
        lambda s, d: s.FreezeForGroup(
            pb.GroupFreezeRequest(domain=d, group_id="g", hold_seconds=5)
        ),
        "FAILED_PRECONDITION",
    ),
    ("gone", "Thaw", lambda s, d: s.Thaw(pb.ThawRequest(domain=d)), "FAILED_PRECONDITION"),
    (
        "gone",
        "ListSnapshots",
        lambda s, d: s.ListSnapshots(pb.ListSnapshotsRequest(domain=d)),
        "NOT_FOUND",
    ),
    ("gone", "GetChains", lambda s, d: s.GetChains(pb.GetChainsRequest(domain=d)), "NOT_FOUND"),
    (
        "gone",
        "CreateSnapshot",
        lambda s, d: s.CreateSnapshot(
            pb.CreateSnapshotRequest(domain=d, **{KEY: uuid.uuid4().hex})
        ),
        "NOT_FOUND",
    ),
    (
        "gone",
        "Consolidate",
        lambda s, d: s.Consolidate(pb.ChainRequest(domain=d, **{KEY: uuid.uuid4().hex})),
        "NOT_FOUND",
    ),
    (
        "gone",
        "Flatten",
        lambda s, d: s.Flatten(pb.ChainRequest(domain=d, **{KEY: uuid.uuid4().hex})),
        "NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("which", "rpc", "call", "code"), CALLS, ids=[f"{c[1]}-{c[0]}" for c in CALLS]
)
def test_a_domain_that_does_not_run_or_lost_its_disk_gets_its_status_and_nothing_changes(
    lab: Lab,
    conn: libvirt.virConnect,
    agent: AgentProcess,
    shut_off: dict[str, str],
    which: str,
    rpc: str,
    call: Call,
    code: str,
):
    before = storage_state(lab, conn)
    with pytest.raises(grpc.RpcError) as refused:
        call(agent.stub("ctl-operator"), shut_off[which])
    assert refused.value.code().name == code, refused.value.details()
    assert shut_off[which] in refused.value.details() or "image" in refused.value.details()
    assert storage_state(lab, conn) == before


def test_the_freeze_status_of_a_domain_that_does_not_run_is_thawed(
    agent: AgentProcess, shut_off: dict[str, str]
):
    status = agent.stub("ctl-operator").GetFreezeStatus(
        pb.GetFreezeStatusRequest(domain=shut_off["whole"]), timeout=30
    )
    assert not status.frozen
