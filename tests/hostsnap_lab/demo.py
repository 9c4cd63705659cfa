"""`hostsnap-lab demo`: a full cycle on both lab guests through hostsnap-agent and the
`hostsnap` CLI: quiesced snapshot, a marker written in the guest, stop, revert, start, the
marker gone. Then a chain of snapshots of the qcow2 guest consolidated live while the guest
writes, every write still there after."""

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


def hostsnap(sock: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    started = step("hostsnap " + " ".join(args))
    done = subprocess.run(
        [HOSTSNAP, "--socket", str(sock), *args], capture_output=True, text=True, check=False
    )
    print(done.stdout.rstrip())
    took(started)
    if done.returncode not in ok:
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
    hostsnap(sock, "chain", name, ok=OVER_THE_LIMIT)


OVER_THE_LIMIT = (0, 1)  # `hostsnap chain` exits 1 for a chain deeper than max_chain_depth
WRITES = 300  # numbered lines the guest appends, 20 ms apart, during the chain demo
WRITER = (
    f"rm -f /data/demo-writes; for i in $(seq {WRITES}); do echo $i >> /data/demo-writes; "
    "sleep 0.02; done; sync"
)


def consolidate_while_writing(sock: Path, dom: libvirt.virDomain) -> None:
    name = dom.name()
    print(f"\n=== {name}: a chain consolidated live while the guest writes ===")
    started = step(f"start a writer in {name}: {WRITES} numbered lines into /data/demo-writes")
    guest_agent.command(dom, "guest-exec", path="/bin/sh", arg=["-c", WRITER])
    took(started)
    taken = []
    for n in range(4):
        created = hostsnap(sock, "snapshot", "create", name, "--quiesce", "none", "--name", f"c{n}")
        found = re.search(r"snapshot ([0-9a-f]{32})", created)
        assert found is not None, created
        taken.append(found.group(1))
    for snapshot_id in taken[:3]:
        hostsnap(sock, "delete", "--defer-merge", snapshot_id)
    hostsnap(sock, "chain", name, "vda", ok=OVER_THE_LIMIT)
    hostsnap(sock, "consolidate", name)
    hostsnap(sock, "chain", name, "vda", ok=OVER_THE_LIMIT)
    started = step(f"wait for the writer, then count its lines in {name}")
    deadline = time.monotonic() + 60
    while True:
        lines = guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/demo-writes"]).split()
        if len(lines) >= WRITES or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    intact = lines == [str(i) for i in range(1, WRITES + 1)]
    print(f"  {len(lines)} of {WRITES} lines, in order: {'every write kept' if intact else 'LOST'}")
    took(started)
    if not intact:
        raise RuntimeError(f"{name}: the guest's writes during the consolidation are not intact")


def run(lab: Lab) -> None:
    conn = libvirt.open(URI)
    try:
        with local_agent(lab) as sock:
            hostsnap(sock, "status")
            hostsnap(sock, "domains")
            for name in (lab.qcow2_domain, lab.rbd_domain):
                cycle(sock, lab, conn.lookupByName(name))
            consolidate_while_writing(sock, conn.lookupByName(lab.qcow2_domain))
            hostsnap(sock, "jobs", "--limit", "10")
    finally:
        conn.close()
