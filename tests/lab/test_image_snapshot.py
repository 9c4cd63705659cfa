"""Snapshots of RBD images without a domain (a stopped VM's volumes): a fresh image in the
lab's pool, with known data, snapshotted by name through a real agent process over mutual
TLS, read back, listed and deleted; an image in use (the running lab guest's) and bad or
missing names are refused and nothing is made. The test's images are removed at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import libvirt
import pytest
import rados
import rbd

from agent.config import AgentConfig
from agent.jobs import JobState
from agent.operations import recovery
from agent.wiring import open_services
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap_lab.ceph import MON_ADDR
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import RBD_DOMAIN, RBD_POOL

from .agent_process import AgentProcess, start_agent
from .support import rbd_snapshots, run_agent_process

MiB = 1 << 20
# Known data at known places: the first block, one in the middle, the last.
WRITES = {
    0: b"stopped-vm-first-block" * 100,
    7 * MiB: b"middle" * 500,
    16 * MiB - 4096: b"e" * 4096,
}


@pytest.fixture(scope="module")
def agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(lab, tmp_path_factory.mktemp("image-agent"))
    yield process
    assert process.stop() == 0, (process.directory / "agent.log").read_text()


@pytest.fixture
def ioctx(lab: Lab) -> Iterator[rados.Ioctx]:
    with rados.Rados(conffile=str(lab.ceph_conf)) as cluster, cluster.open_ioctx(RBD_POOL) as io:
        yield io


def make_image(ioctx: rados.Ioctx) -> str:
    """A fresh 16 MiB image holding WRITES, as a stopped VM's volume would."""
    name = f"hostsnap-test-{uuid.uuid4().hex[:12]}"
    rbd.RBD().create(ioctx, name, 16 * MiB)
    with rbd.Image(ioctx, name) as image:
        for offset, data in WRITES.items():
            image.write(data, offset)
        image.flush()
    return name


def remove_image(ioctx: rados.Ioctx, name: str) -> None:
    with rbd.Image(ioctx, name) as image:
        for snap in list(image.list_snaps()):
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])
    rbd.RBD().remove(ioctx, name)


@pytest.fixture
def images(ioctx: rados.Ioctx) -> Iterator[list[str]]:
    """Two fresh images; removed with all their snapshots afterwards."""
    made = [make_image(ioctx), make_image(ioctx)]
    yield made
    for name in made:
        remove_image(ioctx, name)
    assert not set(made) & set(rbd.RBD().list(ioctx))


def finished(stub, job: pb.Job) -> pb.Job:  # type: ignore[no-untyped-def]
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300))[-1]


def refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    trailers = dict(caught.value.trailing_metadata() or ())
    return caught.value.code(), trailers.get("hostsnap-reason", "")


def read(ioctx: rados.Ioctx, name: str, snapshot: str | None = None) -> dict[int, bytes]:
    with rbd.Image(ioctx, name, snapshot=snapshot, read_only=True) as image:
        return {offset: image.read(offset, len(data)) for offset, data in WRITES.items()}


def test_a_stopped_vms_image_is_snapshotted_by_name_read_back_listed_and_deleted(
    agent: AgentProcess, ioctx: rados.Ioctx, images: list[str]
):
    stub = agent.stub("ctl-operator")
    spec = f"{RBD_POOL}/{images[0]}"
    key = uuid.uuid4().hex
    request = pb.CreateSnapshotRequest(rbd_images=[spec], name="stopped vm", idempotency_key=key)

    job = finished(stub, stub.CreateSnapshot(request, timeout=60))

    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
    assert (job.operation, job.domain) == ("snapshot", "")
    assert job.snapshot.consistency == pb.CONSISTENCY_CRASH
    assert "stopped" in job.snapshot.quiesce_note and "cannot tell" in job.snapshot.quiesce_note
    (disk,) = job.snapshot.disks
    name = f"hostsnap-{disk.snapshot_id}"
    assert (disk.target, disk.active_image, disk.method) == (spec, spec, "rbd-stopped")
    assert disk.content == f"{spec}@{name}"
    assert rbd_snapshots_of(ioctx, images[0]) == [name]
    # The image moves on; the snapshot keeps the data as written.
    with rbd.Image(ioctx, images[0]) as image:
        image.write(b"\xff" * 4096, 0)
    assert read(ioctx, images[0], name) == WRITES
    assert read(ioctx, images[0])[0] != WRITES[0]

    again = stub.CreateSnapshot(request, timeout=60)  # the same key: the same job
    assert again.id == job.id and rbd_snapshots_of(ioctx, images[0]) == [name]

    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(rbd_images=[spec]), timeout=60)
    (volume,) = listed.volumes
    assert (volume.volume.domain, volume.volume.target, volume.volume.location) == ("", spec, spec)
    (snap,) = volume.snapshots
    assert (snap.id, snap.name, snap.consistency) == (
        disk.snapshot_id,
        "stopped vm",
        pb.CONSISTENCY_CRASH,
    )
    assert (snap.domain, snap.target, snap.content) == ("", spec, disk.content)

    deleted = finished(
        stub, stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=disk.snapshot_id))
    )
    assert deleted.state == pb.JOB_STATE_SUCCEEDED, deleted.error.message
    assert rbd_snapshots_of(ioctx, images[0]) == []
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(rbd_images=[spec]), timeout=60)
    assert list(listed.volumes[0].snapshots) == []


def test_several_images_are_snapshotted_in_one_job(
    agent: AgentProcess, ioctx: rados.Ioctx, images: list[str]
):
    stub = agent.stub("ctl-operator")
    specs = [f"{RBD_POOL}/{name}" for name in images]

    job = finished(stub, stub.CreateSnapshot(pb.CreateSnapshotRequest(rbd_images=specs)))

    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
    assert [d.target for d in job.snapshot.disks] == specs
    for name, disk in zip(images, job.snapshot.disks, strict=True):
        assert rbd_snapshots_of(ioctx, name) == [f"hostsnap-{disk.snapshot_id}"]
        assert read(ioctx, name, f"hostsnap-{disk.snapshot_id}") == WRITES


def test_an_image_in_use_is_refused_and_nothing_is_made(
    lab: Lab, agent: AgentProcess, ioctx: rados.Ioctx, images: list[str]
):
    stub = agent.stub("ctl-operator")
    before = rbd_snapshots(lab, RBD_DOMAIN)
    in_use = f"{RBD_POOL}/{RBD_DOMAIN}"  # the running lab guest's disk: QEMU watches it

    for named in ([in_use], [f"{RBD_POOL}/{images[0]}", in_use]):
        request = pb.CreateSnapshotRequest(rbd_images=named, idempotency_key=uuid.uuid4().hex)
        code, reason = refused(lambda r=request: stub.CreateSnapshot(r, timeout=60))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_IN_USE")

    assert rbd_snapshots(lab, RBD_DOMAIN) == before
    assert rbd_snapshots_of(ioctx, images[0]) == []


def test_an_image_a_defined_domain_uses_is_refused_though_nothing_has_it_open(
    agent: AgentProcess, conn: libvirt.virConnect, ioctx: rados.Ioctx, images: list[str]
):
    spec = f"{RBD_POOL}/{images[0]}"
    host, port = MON_ADDR.split(":")
    dom = conn.defineXML(
        f"""<domain type='qemu'><name>hostsnap-test-{images[0]}</name><memory>65536</memory>
      <os><type arch='x86_64'>hvm</type></os><devices>
      <disk type='network' device='disk'><driver name='qemu' type='raw'/>
        <source protocol='rbd' name='{spec}'><host name='{host}' port='{port}'/></source>
        <target dev='vda' bus='virtio'/></disk></devices></domain>"""
    )
    try:
        stub = agent.stub("ctl-operator")
        request = pb.CreateSnapshotRequest(rbd_images=[spec])
        code, reason = refused(lambda: stub.CreateSnapshot(request, timeout=60))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_IN_USE")
        assert rbd_snapshots_of(ioctx, images[0]) == []
    finally:
        dom.undefine()


@pytest.mark.parametrize(
    "named",
    [["../"], ["rbd/../etc"], [""], ["no-pool"], ["/image"], ["rbd/"], ["rbd/a/b"], ["rbd/x"] * 2],
)
def test_malformed_image_names_are_invalid_arguments(agent: AgentProcess, named: list[str]):
    stub = agent.stub("ctl-operator")
    code, _ = refused(
        lambda: stub.CreateSnapshot(pb.CreateSnapshotRequest(rbd_images=named), timeout=60)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_domain_and_images_together_are_an_invalid_argument(agent: AgentProcess, images):  # type: ignore[no-untyped-def]
    stub = agent.stub("ctl-operator")
    both = pb.CreateSnapshotRequest(domain=RBD_DOMAIN, rbd_images=[f"{RBD_POOL}/{images[0]}"])
    code, _ = refused(lambda: stub.CreateSnapshot(both, timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_missing_image_is_not_found(agent: AgentProcess):
    stub = agent.stub("ctl-operator")
    missing = f"{RBD_POOL}/hostsnap-test-missing-{uuid.uuid4().hex[:8]}"
    code, _ = refused(
        lambda: stub.CreateSnapshot(pb.CreateSnapshotRequest(rbd_images=[missing]), timeout=60)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = refused(
        lambda: stub.ListSnapshots(pb.ListSnapshotsRequest(rbd_images=[missing]), timeout=60)
    )
    assert code == grpc.StatusCode.NOT_FOUND


IMAGES = (
    "from agent.model import ImageSnapshotRequest\n"
    "from agent.operations import image_snapshot\n"
    "image_snapshot.create(svc, ImageSnapshotRequest({images!r}, idempotency_key={key!r}))\n"
)


@pytest.mark.parametrize("fault", ["fail:during-rbd-snapshot", "during-rbd-snapshot"])
def test_a_failed_or_interrupted_image_snapshot_leaves_no_snapshot(
    agent_config: AgentConfig, ioctx: rados.Ioctx, images: list[str], fault: str
):
    """The first image's snapshot is made, then the job fails (undo) or the agent dies
    (recovery on the next start): all or nothing."""
    specs = tuple(f"{RBD_POOL}/{name}" for name in images)
    key = uuid.uuid4().hex

    ran = run_agent_process(agent_config, IMAGES.format(images=specs, key=key), fault)

    assert ran.returncode != 0
    if fault.startswith("fail:"):
        assert "injected failure" in ran.stderr
    else:
        assert rbd_snapshots_of(ioctx, images[0]) != []  # killed with the first one made
        svc = open_services(agent_config)
        try:
            (job,) = [
                o for o in recovery.recover(svc) if svc.journal.get(o.job_id).idempotency_key == key
            ]
            assert job.state == JobState.FAILED
        finally:
            svc.close()
    assert [rbd_snapshots_of(ioctx, name) for name in images] == [[], []]


def rbd_snapshots_of(ioctx: rados.Ioctx, name: str) -> list[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return [s["name"] for s in image.list_snaps()]
