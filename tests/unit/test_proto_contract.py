"""The wire contract: stubs generated at install time, and by Debian's own grpc tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import timestamp_pb2

from hostsnap.agent.v1 import agent_pb2, agent_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def test_service_offers_queries_jobs_and_rescue():
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    names = {m.name for m in service.methods}
    assert {"GetHostInfo", "CreateSnapshot", "RevertSnapshot", "DeleteSnapshot"} <= names
    assert service.methods_by_name["WatchJob"].server_streaming
    assert hasattr(agent_pb2_grpc, "AgentServiceStub")
    assert hasattr(agent_pb2_grpc, "add_AgentServiceServicer_to_server")


def test_consistency_groups_are_additive_to_version_one():
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    freeze = service.methods_by_name["FreezeForGroup"]
    thaw = service.methods_by_name["ThawGroup"]
    assert (freeze.input_type.name, freeze.output_type.name) == (
        "GroupFreezeRequest",
        "GroupFreeze",
    )
    assert (thaw.input_type.name, thaw.output_type.name) == ("GroupThawRequest", "FreezeStatus")
    create = agent_pb2.CreateSnapshotRequest.DESCRIPTOR
    assert create.fields_by_name["group_id"].number == 6
    assert create.fields_by_name["idempotency_key"].number == 5  # nothing renumbered
    sent = agent_pb2.GroupFreezeRequest(domain="i-2-10-VM", group_id="g.1", hold_seconds=12.5)
    assert agent_pb2.GroupFreezeRequest.FromString(sent.SerializeToString()) == sent
    # A request of a client that predates groups is a request without a group.
    old = agent_pb2.CreateSnapshotRequest(domain="vm", idempotency_key="k").SerializeToString()
    assert agent_pb2.CreateSnapshotRequest.FromString(old).group_id == ""


def test_rbd_images_are_additive_to_version_one():
    create = agent_pb2.CreateSnapshotRequest.DESCRIPTOR
    assert create.fields_by_name["rbd_images"].number == 7
    listing = agent_pb2.ListSnapshotsRequest.DESCRIPTOR
    assert listing.fields_by_name["rbd_images"].number == 3
    sent = agent_pb2.CreateSnapshotRequest(rbd_images=["rbd/vol-1", "rbd/vol-2"], name="n")
    assert agent_pb2.CreateSnapshotRequest.FromString(sent.SerializeToString()) == sent
    # A request of a client that predates images names none.
    old = agent_pb2.CreateSnapshotRequest(domain="vm", idempotency_key="k").SerializeToString()
    assert list(agent_pb2.CreateSnapshotRequest.FromString(old).rbd_images) == []


def test_host_info_survives_the_wire():
    started = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    sent = agent_pb2.HostInfo(hostname="kvm-01", libvirt_version="9.0.0", started_at=started)
    received = agent_pb2.HostInfo.FromString(sent.SerializeToString())
    assert received == sent
    assert received.ceph_client_version == ""


def test_stubs_generate_and_load_with_debians_grpc_tools_and_protobuf(tmp_path: Path):
    generate = subprocess.run(
        [SYSTEM_PYTHON, str(REPO / "proto" / "generate_stubs.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert generate.returncode == 0, generate.stderr
    load = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from hostsnap.agent.v1 import agent_pb2, agent_pb2_grpc;"
            "import grpc, google.protobuf;"
            "print(agent_pb2.__file__, grpc.__version__, google.protobuf.__version__)",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert load.returncode == 0, load.stderr
    stub_file, grpc_version, protobuf_version = load.stdout.split()
    assert stub_file.startswith(str(tmp_path))
    assert sys.executable != SYSTEM_PYTHON  # the suite itself runs in the venv
    assert grpc_version.startswith("1.51"), "Debian 12's python3-grpcio"
    assert protobuf_version.startswith(("3.21", "4.21")), "Debian 12's python3-protobuf"
