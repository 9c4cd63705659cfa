"""`hostsnap-lab demo`: a full cycle on both lab guests through hostsnap-agent and the
`hostsnap` CLI: quiesced snapshot, a marker written in the guest, stop, revert, start, the
marker gone."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import libvirt

from . import guest_agent
from .lab import Lab, wait_for_guest_agents
from .libvirtd import URI
from .local_agent import local_agent

HOSTSNAP = str(Path(sys.executable).parent / "hostsnap")


def step(label: str) -> float:
    print(f"\n$ {label}", flush=True)
    return time.monotonic()


def took(started: float) -> None:
    print(f"  ({1000 * (time.monotonic() - started):.0f} ms)", flush=True)


def hostsnap(sock: Path, *args: str) -> str:
    started = step("hostsnap " + " ".join(args))
    done = subprocess.run(
        [HOSTSNAP, "--socket", str(sock), *args], capture_output=True, text=True, check=False
    )
    print(done.stdout.rstrip())
    took(started)
    if done.returncode != 0:
        raise RuntimeError(f"hostsnap {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def marker_present(dom: libvirt.virDomain) -> bool:
    out = guest_agent.exec_in_guest(
        dom, ["/bin/sh", "-c", "test -f /data/demo-marker && echo yes || echo no"]
    )
    return out.strip() == "yes"


def cycle(sock: Path, lab: Lab, dom: libvirt.virDomain) -> None:
    name = dom.name()
    print(f"\n=== {name} ===")
    created = hostsnap(sock, "snapshot", "create", name, "--quiesce", "required", "--name", "demo")
    found = re.search(r"snapshot ([0-9a-f]{32})", created)
    assert found is not None, created
    snapshot_id = found.group(1)
    started = step(f"write /data/demo-marker in {name} (guest agent)")
    guest_agent.exec_in_guest(dom, ["/bin/sh", "-c", "echo demo > /data/demo-marker && sync"])
    print(f"  marker present: {marker_present(dom)}")
    took(started)
    started = step(f"virsh destroy {name}")
    dom.destroy()
    took(started)
    hostsnap(sock, "revert", snapshot_id)
    started = step(f"virsh start {name}, wait for its guest agent")
    dom.create()
    wait_for_guest_agents(dom.connect(), lab.paths, (name,))
    took(started)
    present = marker_present(dom)
    print(
        f"\n  marker present: {present} ({'gone, as reverted' if not present else 'STILL THERE'})"
    )
    if present:
        raise RuntimeError(f"{name}: the revert did not take the marker away")
    hostsnap(sock, "chain", name)


def run(lab: Lab) -> None:
    conn = libvirt.open(URI)
    try:
        with local_agent(lab) as sock:
            hostsnap(sock, "status")
            hostsnap(sock, "domains")
            for name in (lab.qcow2_domain, lab.rbd_domain):
                cycle(sock, lab, conn.lookupByName(name))
            hostsnap(sock, "jobs", "--limit", "6")
    finally:
        conn.close()
