"""hostsnap-agent as a separate process, driven over gRPC: over mutual TLS with the test's
certificates and over the root-only unix socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import libvirt
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.lab import Lab

from .agent_process import AgentProcess, start_agent
from .support import has_marker, start, stop, storage_state, write_marker


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


def finished(stub, job: pb.Job) -> pb.Job:  # type: ignore[no-untyped-def]
    updates = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300))
    assert updates[-1].state != pb.JOB_STATE_RUNNING
    return updates[-1]


@pytest.mark.parametrize("domain", ["lab-qcow2", "lab-rbd"])
def test_snapshot_revert_delete_cycle_over_mutual_tls(
    agent: AgentProcess, conn: libvirt.virConnect, domain: str
):
    stub = agent.stub("ctl-operator")
    dom = conn.lookupByName(domain)
    write_marker(dom, "grpc-before")
    created = stub.CreateSnapshot(
        pb.CreateSnapshotRequest(domain=domain, quiesce=pb.QUIESCE_REQUIRED, name="grpc")
    )
    assert created.operation == "snapshot" and len(created.id) == 32
    done = finished(stub, created)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error.message
    assert stub.GetJob(pb.GetJobRequest(job_id=created.id)) == done
    assert done.snapshot.consistency == pb.CONSISTENCY_APPLICATION
    snapshot_id = done.snapshot.disks[0].snapshot_id
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain))
    assert snapshot_id in {s.id for v in listed.volumes for s in v.snapshots}

    write_marker(dom, "grpc-after")
    stop(dom)
    try:
        reverted = finished(
            stub, stub.RevertSnapshot(pb.RevertSnapshotRequest(snapshot_id=snapshot_id))
        )
        assert reverted.state == pb.JOB_STATE_SUCCEEDED, reverted.error.message
    finally:
        start(dom)
    assert has_marker(dom, "grpc-before") and not has_marker(dom, "grpc-after")

    deleted = finished(stub, stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id)))
    assert deleted.state == pb.JOB_STATE_SUCCEEDED, deleted.error.message
    if domain == "lab-qcow2":
        # The revert made the snapshot's layer the backing of two images: it stays.
        assert "stays: it is the backing file of" in deleted.delete.note
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(domain=domain))
    assert snapshot_id not in {s.id for v in listed.volumes for s in v.snapshots}
    with pytest.raises(grpc.RpcError) as gone:
        stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_same_idempotency_key_twice_gives_one_job(agent: AgentProcess):
    stub = agent.stub("ctl-operator")
    request = pb.CreateSnapshotRequest(domain="lab-rbd", idempotency_key=uuid.uuid4().hex)
    first = stub.CreateSnapshot(request)
    finished(stub, first)
    second = stub.CreateSnapshot(request)
    assert second.id == first.id and second.state == pb.JOB_STATE_SUCCEEDED


def test_a_running_domain_asked_to_revert_gets_failed_precondition(agent: AgentProcess):
    stub = agent.stub("ctl-operator")
    done = finished(stub, stub.CreateSnapshot(pb.CreateSnapshotRequest(domain="lab-qcow2")))
    with pytest.raises(grpc.RpcError) as refused:
        stub.RevertSnapshot(
            pb.RevertSnapshotRequest(snapshot_id=done.snapshot.disks[0].snapshot_id)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "revert needs it shut off" in refused.value.details()
    assert ("hostsnap-reason", "DOMAIN_NOT_STOPPED") in refused.value.trailing_metadata()


@pytest.mark.parametrize("who", ["no certificate", "stranger"])
def test_tcp_without_a_trusted_client_certificate_is_refused(agent: AgentProcess, who: str):
    if who == "no certificate":
        credentials = grpc.ssl_channel_credentials(root_certificates=agent.ca.read_bytes())
    else:
        credentials = agent.credentials(who)
    from hostsnap.agent.v1 import agent_pb2_grpc

    stub = agent_pb2_grpc.AgentServiceStub(grpc.secure_channel(agent.endpoint, credentials))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


def test_a_viewer_can_look_but_not_snapshot_and_the_audit_log_says_who_did_what(
    agent: AgentProcess,
):
    viewer = agent.stub("ctl-viewer")
    assert viewer.GetHostInfo(pb.GetHostInfoRequest()).libvirt_version
    with pytest.raises(grpc.RpcError) as denied:
        viewer.CreateSnapshot(pb.CreateSnapshotRequest(domain="lab-rbd"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the operator role" in denied.value.details()
    operator = agent.stub("ctl-operator")
    finished(operator, operator.CreateSnapshot(pb.CreateSnapshotRequest(domain="lab-rbd")))

    entries = [json.loads(line) for line in agent.audit_log.read_text().splitlines()]
    assert {
        "identity": "ctl-viewer",
        "rpc": "CreateSnapshot",
        "target": "lab-rbd",
        "result": "PERMISSION_DENIED",
    } in [{k: e[k] for k in ("identity", "rpc", "target", "result")} for e in entries]
    assert any(
        e["identity"] == "ctl-operator" and e["rpc"] == "CreateSnapshot" and e["result"] == "OK"
        for e in entries
    )


def test_an_independent_client_finds_the_service_by_reflection_and_calls_it(
    agent: AgentProcess,
):
    """No project stubs: the service's descriptors come from the server itself."""
    channel = grpc.insecure_channel(f"unix:{agent.socket}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**request: str) -> reflection_pb2.ServerReflectionResponse:
        (answer,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)])
        )
        return answer

    services = {s.name for s in ask(list_services="").list_services_response.service}
    assert services == {
        "hostsnap.agent.v1.AgentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
    # v1, which grpcurl asks first, is the same messages under another package name.
    v1 = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (listed,) = v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert {s.name for s in listed.list_services_response.service} == services
    pool = descriptor_pool.DescriptorPool()
    files = ask(file_containing_symbol="hostsnap.agent.v1.AgentService")
    pending = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in files.file_descriptor_response.file_descriptor_proto
    ]
    while pending:  # add each file after its dependencies
        for proto in list(pending):
            try:
                pool.Add(proto)
                pending.remove(proto)
            except TypeError:
                continue
    method = pool.FindServiceByName("hostsnap.agent.v1.AgentService").methods_by_name["ListDomains"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/hostsnap.agent.v1.AgentService/ListDomains",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    answer = call(request_class(include_inactive=True))
    assert {"lab-qcow2", "lab-rbd"} <= {d.name for d in answer.domains}
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="hostsnap.agent.v1.AgentService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


BAD_REQUESTS = [
    (
        "unknown domain",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="no-such-vm"),
        "NOT_FOUND",
    ),
    ("missing domain", "CreateSnapshot", pb.CreateSnapshotRequest(), "INVALID_ARGUMENT"),
    (
        "name with ..",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="../lab-qcow2"),
        "INVALID_ARGUMENT",
    ),
    (
        "wrong enum value",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="lab-qcow2", quiesce=99),
        "INVALID_ARGUMENT",
    ),
    (
        "oversized key",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="lab-qcow2", idempotency_key="k" * 129),
        "INVALID_ARGUMENT",
    ),
    (
        "oversized name",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="lab-qcow2", name="n" * 201),
        "INVALID_ARGUMENT",
    ),
    (
        "unknown disk",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(domain="lab-qcow2", disks=["vdq"]),
        "NOT_FOUND",
    ),
    (
        "malformed snapshot id",
        "RevertSnapshot",
        pb.RevertSnapshotRequest(snapshot_id="../x"),
        "INVALID_ARGUMENT",
    ),
    (
        "unknown snapshot",
        "DeleteSnapshot",
        pb.DeleteSnapshotRequest(snapshot_id="f" * 32),
        "NOT_FOUND",
    ),
    ("malformed job id", "GetJob", pb.GetJobRequest(job_id="1; drop"), "INVALID_ARGUMENT"),
    ("unknown job", "GetJob", pb.GetJobRequest(job_id="e" * 32), "NOT_FOUND"),
    ("wrong job state", "ListJobs", pb.ListJobsRequest(state=42), "INVALID_ARGUMENT"),
    ("thaw of unknown domain", "Thaw", pb.ThawRequest(domain="no-such-vm"), "NOT_FOUND"),
]


@pytest.mark.parametrize(
    ("case", "rpc", "request_message", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_get_their_status_and_change_nothing(
    lab: Lab,
    conn: libvirt.virConnect,
    agent: AgentProcess,
    case: str,
    rpc: str,
    request_message,
    code: str,
):
    before = storage_state(lab, conn)
    with pytest.raises(grpc.RpcError) as refused:
        getattr(agent.stub("ctl-operator"), rpc)(request_message, timeout=30)
    assert refused.value.code().name == code, refused.value.details()
    assert refused.value.details()
    assert storage_state(lab, conn) == before


def qemu_pid(lab: Lab, domain: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text())


def test_a_hung_call_does_not_stall_other_requests(agent: AgentProcess, lab: Lab):
    """A guest agent that does not answer (its QEMU stopped) holds one call up to the agent
    timeout; calls about the host and other domains are answered meanwhile. (libvirt itself
    serialises some calls on the stalled domain; those wait for libvirt.)"""
    stub = agent.stub("ctl-operator")
    stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=10)
    pid = qemu_pid(lab, "lab-rbd")
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = stub.GetFreezeStatus.future(pb.GetFreezeStatusRequest(domain="lab-rbd"), timeout=60)
        time.sleep(0.5)
        started = time.monotonic()
        info = stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=5)
        volumes = stub.ListVolumes(pb.ListVolumesRequest(domain="lab-qcow2"), timeout=5)
        other = stub.GetFreezeStatus(pb.GetFreezeStatusRequest(domain="lab-qcow2"), timeout=5)
        answered_in = time.monotonic() - started
        assert not hung.done(), "the call to the stopped guest was expected to be waiting"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert info.hostname and volumes.volumes[0].target == "vda" and not other.frozen
    assert answered_in < 3
    assert hung.result(timeout=30).domain == "lab-rbd"  # resumed, its guest agent answered


def test_the_cli_reaches_a_remote_agent_with_certificates(agent: AgentProcess):
    hostsnap = str(Path(sys.executable).parent / "hostsnap")
    d = agent.directory
    remote = [hostsnap, "--endpoint", agent.endpoint, "--ca", str(agent.ca)]
    done = subprocess.run(
        [
            *remote,
            "--cert",
            str(d / "ctl-viewer.crt"),
            "--key",
            str(d / "ctl-viewer.key"),
            "domains",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "lab-qcow2" in done.stdout, done.stderr
    denied = subprocess.run(
        [
            *remote,
            "--cert",
            str(d / "ctl-viewer.crt"),
            "--key",
            str(d / "ctl-viewer.key"),
            "snapshot",
            "create",
            "lab-rbd",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode == 6 and "needs the operator role" in denied.stderr


def test_stats_show_the_guests_writing_and_the_hosts_temperatures(agent: AgentProcess):
    viewer = agent.stub("ctl-viewer")
    found = viewer.GetStats(pb.GetStatsRequest(interval_seconds=2), timeout=30)
    assert 1.5 < found.interval_seconds < 4
    disks = {(d.domain, d.disk): d for d in found.domain_disks}
    assert disks[("lab-qcow2", "vda")].write_iops > 0
    assert disks[("lab-rbd", "vda")].write_iops > 0
    assert found.host_devices and all(d.domain == "host" for d in found.host_devices)
    (reading,) = found.temperatures
    assert (reading.sensor, reading.label, reading.celsius) == (
        "hwmon0:coretemp",
        "Package id 0",
        47.0,
    )
    assert (reading.high.value, reading.critical.value) == (84.0, 100.0)
    stream = viewer.WatchStats(pb.GetStatsRequest(interval_seconds=0.5), timeout=30)
    first, second = next(stream), next(stream)
    stream.cancel()
    assert second.taken_at.ToNanoseconds() > first.taken_at.ToNanoseconds()
    with pytest.raises(grpc.RpcError) as refused:
        viewer.GetStats(pb.GetStatsRequest(interval_seconds=600))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_prometheus_endpoint_parses_and_carries_disks_temperatures_and_durations(
    agent: AgentProcess,
):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    operator = agent.stub("ctl-operator")
    done = finished(
        operator,
        operator.CreateSnapshot(
            pb.CreateSnapshotRequest(domain="lab-qcow2", quiesce=pb.QUIESCE_REQUIRED)
        ),
    )
    assert done.state == pb.JOB_STATE_SUCCEEDED
    text = urllib.request.urlopen(f"http://{agent.metrics}/metrics", timeout=10).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert (
        value("hostsnap_disk_operations_total", domain="lab-qcow2", disk="vda", operation="write")
        > 0
    )
    assert value("hostsnap_disk_bytes_total", domain="lab-rbd", disk="vda", direction="write") > 0
    host_devices = {
        labels["device"]
        for (name, labelled), _ in samples.items()
        if name == "hostsnap_host_disk_operations_total"
        for labels in [dict(labelled)]
    }
    assert host_devices, "the host's block devices have a family of their own"
    assert not any(
        dict(labelled).get("domain") == "host"
        for (name, labelled), _ in samples.items()
        if name.startswith("hostsnap_disk_")
    )
    assert (
        value("hostsnap_host_temperature_celsius", sensor="hwmon0:coretemp", label="Package id 0")
        == 47.0
    )
    assert value("hostsnap_host_temperature_sensors") == 1
    assert value("hostsnap_freeze_duration_seconds_count") >= 1
    assert (
        value("hostsnap_job_duration_seconds_count", operation="snapshot", result="succeeded") >= 1
    )


def test_a_hot_host_holds_a_snapshot_back_and_a_cool_one_lets_it_run(agent: AgentProcess, lab: Lab):
    from .support import rbd_snapshots

    sensor = agent.directory / "sysfs" / "class" / "hwmon" / "hwmon0" / "temp1_input"
    operator = agent.stub("ctl-operator")
    before = rbd_snapshots(lab)
    sensor.write_text("91000\n")  # above the 85 °C ceiling of the test's configuration
    try:
        refused = finished(
            operator, operator.CreateSnapshot(pb.CreateSnapshotRequest(domain="lab-rbd"))
        )
    finally:
        sensor.write_text("47000\n")
    assert refused.state == pb.JOB_STATE_FAILED
    assert (refused.error.code, refused.error.reason) == ("RESOURCE_EXHAUSTED", "ADMISSION_TIMEOUT")
    assert refused.error.retry_after_seconds > 0
    assert "91.0 °C (ceiling 85.0 °C)" in refused.error.message
    assert "admission-wait" in refused.steps and "plan" not in refused.steps
    assert rbd_snapshots(lab) == before  # nothing was made

    sensor.write_text("91000\n")
    started = operator.CreateSnapshot(pb.CreateSnapshotRequest(domain="lab-rbd"))
    time.sleep(1)
    sensor.write_text("47000\n")  # the rack cools down while the job waits
    ran = finished(operator, started)
    assert ran.state == pb.JOB_STATE_SUCCEEDED, ran.error.message
    assert ran.steps[:1] == ["admission-wait"] and "admitted" in ran.steps
