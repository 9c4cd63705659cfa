"""`hostsnap-lab demo`: a full cycle on both lab guests with the snapshot engine: quiesced
snapshot, a marker written in the guest, stop, revert, start, the marker gone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import libvirt

from agent.config import AgentConfig
from agent.model import Quiesce, SnapshotRequest
from agent.operations import revert, snapshot
from agent.operations.services import Services

from . import guest_agent
from .lab import Lab, wait_for_guest_agents
from .libvirtd import URI

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    started = time.monotonic()
    result = action()
    print(f"  {label:<44} {1000 * (time.monotonic() - started):8.0f} ms", flush=True)
    return result


def marker_present(dom: libvirt.virDomain) -> bool:
    out = guest_agent.exec_in_guest(
        dom, ["/bin/sh", "-c", "test -f /data/demo-marker && echo yes || echo no"]
    )
    return out.strip() == "yes"


def cycle(svc: Services, lab: Lab, dom: libvirt.virDomain) -> None:
    name = dom.name()
    print(f"{name}:")
    taken = timed(
        "quiesced snapshot",
        lambda: snapshot.create(svc, SnapshotRequest(name, quiesce=Quiesce.REQUIRED, name="demo")),
    )
    disk = taken.disks[0]
    print(
        f"    {taken.consistency}-consistent, guest frozen {1000 * taken.frozen_seconds:.0f} ms; "
        f"snapshot {disk.snapshot_id} = {disk.content}; active image {disk.active_image}"
    )
    timed(
        "marker written in the guest",
        lambda: guest_agent.exec_in_guest(
            dom, ["/bin/sh", "-c", "echo demo > /data/demo-marker && sync"]
        ),
    )
    print(f"    marker present: {marker_present(dom)}")
    timed("domain stopped", dom.destroy)
    reverted = timed(
        "revert to the snapshot",
        lambda: revert.revert(svc, revert.RevertRequest(disk.snapshot_id, domain=name)),
    )
    print(f"    active image {reverted.active_image}")
    timed(
        "domain started, guest agent answers",
        lambda: (dom.create(), wait_for_guest_agents(dom.connect(), lab.paths, (name,))),
    )
    present = marker_present(dom)
    print(
        f"    marker present: {present} ({'gone, as reverted' if not present else 'STILL THERE'})"
    )
    if present:
        raise RuntimeError(f"{name}: the revert did not take the marker away")


def run(lab: Lab) -> None:
    logging.getLogger("agent").setLevel(logging.WARNING)  # the demo prints its own account
    svc = Services.open(AgentConfig(state_dir=lab.agent_state, ceph_conf=str(lab.ceph_conf)))
    conn = libvirt.open(URI)
    try:
        for name in (lab.qcow2_domain, lab.rbd_domain):
            cycle(svc, lab, conn.lookupByName(name))
    finally:
        conn.close()
        svc.close()
