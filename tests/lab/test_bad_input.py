"""Bad input gets a specific error and leaves disks, chains and snapshots as they were."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import libvirt
import pytest

from agent.errors import Capacity, HostsnapError, InvalidArgument, NotFound, Precondition
from agent.model import SnapshotRequest
from agent.operations import consolidate, delete, revert, snapshot
from agent.operations.consolidate import ChainRequest
from agent.operations.delete import DeleteRequest
from agent.operations.revert import RevertRequest
from agent.operations.services import Services
from hostsnap_lab.lab import Lab

from .support import storage_state

UNKNOWN_ID = "0" * 32


def rbd_snapshot_id(svc: Services) -> str:
    return snapshot.create(svc, SnapshotRequest("lab-rbd")).disks[0].snapshot_id


CASES: list[tuple[str, Callable[[Services], Any] | None, type[HostsnapError], str]] = [
    (
        "unknown domain",
        lambda s: snapshot.create(s, SnapshotRequest("no-such-vm")),
        NotFound,
        "no domain named 'no-such-vm'",
    ),
    (
        "unknown disk",
        lambda s: snapshot.create(s, SnapshotRequest("lab-qcow2", disks=("vdz",))),
        NotFound,
        "has no disk 'vdz' \\(its disks: vda\\)",
    ),
    (
        "domain name with ..",
        lambda s: snapshot.create(s, SnapshotRequest("../lab-qcow2")),
        InvalidArgument,
        "may not contain",
    ),
    (
        "domain name with /",
        lambda s: snapshot.create(s, SnapshotRequest("pool/lab-qcow2")),
        InvalidArgument,
        "may not contain",
    ),
    (
        "disk name with ..",
        lambda s: snapshot.create(s, SnapshotRequest("lab-qcow2", disks=("../vda",))),
        InvalidArgument,
        "not a target device name",
    ),
    (
        "snapshot name with ..",
        lambda s: snapshot.create(s, SnapshotRequest("lab-qcow2", name="../../etc/passwd")),
        InvalidArgument,
        "without '..'",
    ),
    (
        "snapshot id with a path",
        lambda s: revert.revert(s, RevertRequest("../../var/lib/x")),
        InvalidArgument,
        "not a hostsnap id",
    ),
    (
        "unknown snapshot id",
        lambda s: delete.delete(s, DeleteRequest(UNKNOWN_ID)),
        NotFound,
        f"no snapshot {UNKNOWN_ID}",
    ),
    (
        "snapshot of another volume",
        None,  # needs a real snapshot first: made in the test, before the state is taken
        InvalidArgument,
        "belongs to lab-rbd/vda, not to lab-qcow2",
    ),
    (
        "consolidate of an unknown domain",
        lambda s: consolidate.consolidate(s, ChainRequest("no-such-vm")),
        NotFound,
        "no domain named 'no-such-vm'",
    ),
    (
        "flatten of a domain name with ..",
        lambda s: consolidate.flatten(s, ChainRequest("../lab-qcow2")),
        InvalidArgument,
        "may not contain",
    ),
    (
        "consolidate with force",
        lambda s: consolidate.consolidate(s, ChainRequest("lab-qcow2", force=True)),
        InvalidArgument,
        "force applies to flatten",
    ),
    (
        "flatten naming a disk twice",
        lambda s: consolidate.flatten(s, ChainRequest("lab-qcow2", ("vda", "vda"), force=True)),
        InvalidArgument,
        "named twice",
    ),
    (
        "negative bandwidth",
        lambda s: consolidate.consolidate(s, ChainRequest("lab-qcow2", bandwidth_mib=-1)),
        InvalidArgument,
        "bandwidth_mib",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    lab: Lab,
    conn: libvirt.virConnect,
    svc: Services,
    case: str,
    call: Callable[[Services], Any] | None,
    error: type[HostsnapError],
    message: str,
):
    if call is None:
        sid = rbd_snapshot_id(svc)
        call = lambda s: delete.delete(s, DeleteRequest(sid, domain="lab-qcow2"))  # noqa: E731
    before = storage_state(lab, conn)
    with pytest.raises(error, match=message):
        call(svc)
    assert storage_state(lab, conn) == before


def test_a_pool_without_the_headroom_is_refused_as_storage_error_530(
    lab: Lab, conn: libvirt.virConnect, svc: Services
):
    # The pool's real free space, against a headroom no disk of this machine can offer.
    svc.config = dataclasses.replace(svc.config, pool_headroom=10_000_000.0)
    before = storage_state(lab, conn)
    with pytest.raises(Capacity, match="Storage Provider Error \\(530\\)") as refused:
        snapshot.create(svc, SnapshotRequest("lab-qcow2"))
    assert refused.value.cloudstack_code == 530
    assert storage_state(lab, conn) == before


def test_a_paused_domain_is_not_consolidated(lab: Lab, conn: libvirt.virConnect, svc: Services):
    dom = conn.lookupByName("lab-qcow2")
    before = storage_state(lab, conn)
    dom.suspend()
    try:
        with pytest.raises(Precondition, match="is paused; consolidate it running") as refused:
            consolidate.consolidate(svc, ChainRequest("lab-qcow2"))
    finally:
        dom.resume()
    assert refused.value.reason == "DOMAIN_NOT_RUNNING"
    assert storage_state(lab, conn) == before
