"""The freeze window as the guest sees it: hostsnap's quiesced qcow2 snapshot against
`virsh snapshot-create-as --disk-only --atomic --quiesce --no-metadata`, same run, same guest.

A writer inside the guest appends a nanosecond timestamp (/proc/timer_list) to its frozen-able
filesystem every ~5 ms; the longest gap between consecutive lines during a snapshot is the
stall the guest saw. Trials alternate between the two tools. Goal: hostsnap's median stall
within 10% of virsh's (ratio hostsnap / virsh <= 1.10).
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from agent.config import AgentConfig
from agent.model import Quiesce, SnapshotRequest
from agent.operations import snapshot
from agent.operations.services import Services
from bench.bench_domain import bench_domain
from bench.report import write_report
from hostsnap_lab import guest_agent
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI

NAME = "bench-freeze"
TRIALS = 7
WRITER = (
    "mkfifo /tmp/tick; exec 3<>/tmp/tick; "
    "while :; do { read a; read b; read c; } < /proc/timer_list; "
    'echo "${c#now at }" >> /data/bench-ts; read -t 0.005 -u 3 x; done'
)


def stamps(dom: libvirt.virDomain) -> list[int]:
    out = guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/bench-ts"])
    return [int(line.split()[0]) for line in out.splitlines() if line.strip()]


def longest_stall_ms(dom: libvirt.virDomain, action: Callable[[], object]) -> float:
    """Runs `action` and returns the longest gap the guest's writer saw around it."""
    seen = len(stamps(dom))
    time.sleep(0.3)
    action()
    time.sleep(0.3)
    recent = stamps(dom)[seen:]
    return max(b - a for a, b in itertools.pairwise(recent)) / 1e6


def virsh_snapshot(pool: Path, n: int) -> None:
    overlay = pool / f"{NAME}.virsh-{n}"
    flags = ["--disk-only", "--atomic", "--quiesce", "--no-metadata"]
    subprocess.run(
        [
            "virsh",
            "-c",
            URI,
            "-q",
            "snapshot-create-as",
            NAME,
            *flags,
            "--diskspec",
            f"vda,file={overlay}",
        ],
        check=True,
        capture_output=True,
    )


def main() -> Path:
    lab = lab_stack.up()
    with (
        tempfile.TemporaryDirectory(prefix="hostsnap-bench-") as state,
        bench_domain(lab, NAME) as dom,
    ):
        svc = Services.open(AgentConfig(state_dir=Path(state), ceph_conf=str(lab.ceph_conf)))
        try:
            guest_agent.command(dom, "guest-exec", path="/bin/sh", arg=["-c", WRITER])
            time.sleep(2)
            ours, theirs = [], []
            request = SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED)
            for n in range(TRIALS):
                ours.append(longest_stall_ms(dom, lambda: snapshot.create(svc, request)))
                theirs.append(longest_stall_ms(dom, lambda n=n: virsh_snapshot(lab.paths.pool, n)))
                print(f"trial {n + 1}: hostsnap {ours[-1]:.1f} ms, virsh {theirs[-1]:.1f} ms")
            baseline = longest_stall_ms(dom, lambda: time.sleep(0.2))
        finally:
            svc.close()
    ratio = statistics.median(ours) / statistics.median(theirs)
    return write_report(
        "freeze_window",
        ratio=ratio,
        goal="median guest stall, hostsnap / virsh; goal <= 1.10",
        measured={"tool": "hostsnap snapshot.create(quiesce=required)", "stall_ms": ours},
        anchor={
            "tool": "virsh snapshot-create-as --disk-only --atomic --quiesce --no-metadata",
            "stall_ms": theirs,
            "idle_writer_longest_gap_ms": baseline,
        },
    )


if __name__ == "__main__":
    main()
