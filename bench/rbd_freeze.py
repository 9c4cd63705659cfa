"""The guest-observed stall of a quiesced RBD snapshot: the naive path with the raw tools
(`virsh domfsfreeze` → `rbd snap create` → `virsh domfsthaw`, the guest frozen across the
snapshot) against hostsnap's short freeze (the guest frozen only while its disk switches to a
local overlay), same run, same guest, the lab's monitor at its default settings. For
reference, hostsnap with `rbd_local_overlay = false` (frozen across the snapshot, as naive).

The stall is measured as in freeze_window: a writer in the guest appends a timestamp to its
RBD-backed /data every ~5 ms; the longest gap around a snapshot is what the guest saw.
Trials alternate between the paths, in an order that rotates: an RBD snapshot waits for the
monitor's next Paxos commit, up to `paxos_propose_interval` after its last one, and the path
before has just made one. The report gives the monitor's setting and its commit rate during
the trials. Goal: naive / hostsnap median stall >= 10.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from agent.config import AgentConfig
from agent.model import Quiesce, SnapshotRequest
from agent.operations import rbd_overlay, snapshot
from agent.operations.services import Services
from bench.bench_domain import rbd_bench_domain
from bench.freeze_window import WRITER, longest_stall_ms
from bench.report import write_report
from hostsnap_lab import domains, guest_agent
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI
from hostsnap_lab.paths import RBD_POOL
from hostsnap_lab.run import run

NAME = "bench-rbd"
IMAGE = f"{RBD_POOL}/{NAME}"
TRIALS = 7
GOAL = 10.0
MONITOR = "mon.a"
MONITOR_SETTING = "paxos_propose_interval"

Trial = dict[str, float]  # stall_ms, wall_ms and, when the tool reports it, frozen_ms


def ceph(lab: lab_stack.Lab, *args: str) -> Any:
    return json.loads(run(["ceph", "-c", str(lab.ceph_conf), *args, "-f", "json"]).stdout)


def monitor_setting(lab: lab_stack.Lab) -> dict[str, float]:
    """The running monitor's value of the setting that batches Paxos proposals (snapshot-id
    allocation among them), and Ceph's default for it."""
    running = ceph(lab, "daemon", MONITOR, "config", "get", MONITOR_SETTING)
    return {
        MONITOR_SETTING: float(running[MONITOR_SETTING]),
        "default": float(ceph(lab, "config", "help", MONITOR_SETTING)["default"]),
    }


def paxos_commits(lab: lab_stack.Lab) -> int:
    return int(ceph(lab, "daemon", MONITOR, "perf", "dump", "paxos")["paxos"]["commit"])


def naive_snapshot(lab: lab_stack.Lab, n: int) -> None:
    """Freezes the guest, snapshots its image and thaws it, each with its own tool."""
    virsh = ["virsh", "-c", URI, "-q"]
    rbd = ["rbd", "-c", str(lab.ceph_conf)]
    run([*virsh, "domfsfreeze", NAME])
    try:
        run([*rbd, "snap", "create", "--no-progress", f"{IMAGE}@naive-{n}"])
    finally:
        run([*virsh, "domfsthaw", NAME])


def hostsnap_snapshot(svc: Services, dom: libvirt.virDomain, method: str) -> float:
    """A quiesced snapshot through hostsnap; returns how long hostsnap says the guest was
    frozen. Fails unless the disk was snapshotted with `method` and is back on its image
    with no overlay left."""
    result = snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.REQUIRED))
    used = [disk.method for disk in result.disks]
    left = rbd_overlay.leftovers(svc.config.rbd_overlay_dir)
    source = domains.disk_source(dom)
    if used != [method] or left or source != f"rbd:{IMAGE}":
        raise RuntimeError(
            f"hostsnap snapshotted {NAME} with {used} (expected [{method!r}]), "
            f"left overlays {left}, the disk is on {source}"
        )
    return result.frozen_seconds


def trial(dom: libvirt.virDomain, action: Callable[[], float | None]) -> Trial:
    """Runs `action` under the guest writer's watch: the stall the guest saw, the action's
    wall time and the frozen time it reports (seconds, or None)."""
    timing: Trial = {}

    def timed() -> None:
        started = time.perf_counter()
        frozen = action()
        timing["wall_ms"] = 1000 * (time.perf_counter() - started)
        if frozen is not None:
            timing["frozen_ms"] = 1000 * frozen

    timing["stall_ms"] = longest_stall_ms(dom, timed)
    return timing


def median_stall_ms(trials: list[Trial]) -> float:
    return statistics.median(t["stall_ms"] for t in trials)


def summary(tool: str, trials: list[Trial]) -> dict[str, Any]:
    """The per-trial figures of one path as columns, with the median stall."""
    columns = {key: [t[key] for t in trials] for key in trials[0]}
    return {"tool": tool, **columns, "median_stall_ms": median_stall_ms(trials)}


def described(figures: Trial) -> str:
    return " / ".join(f"{key.removesuffix('_ms')} {ms:.0f} ms" for key, ms in figures.items())


def open_services(lab: lab_stack.Lab, state: Path, *, local_overlay: bool) -> Services:
    config = AgentConfig(
        state_dir=state, ceph_conf=str(lab.ceph_conf), rbd_local_overlay=local_overlay
    )
    return Services.open(config)


def run_trials(lab: lab_stack.Lab, dom: libvirt.virDomain, state: Path) -> dict[str, list[Trial]]:
    """Each trial runs every path once, each trial starting one path further; returns each
    path's trials."""
    short = open_services(lab, state / "short-freeze", local_overlay=True)
    across = open_services(lab, state / "frozen-across", local_overlay=False)
    paths: dict[str, Callable[[int], float | None]] = {
        "naive": lambda n: naive_snapshot(lab, n),
        "hostsnap": lambda _: hostsnap_snapshot(short, dom, "rbd-short-freeze"),
        "frozen_across": lambda _: hostsnap_snapshot(across, dom, "rbd-frozen-across"),
    }
    names = list(paths)
    trials: dict[str, list[Trial]] = {path: [] for path in paths}
    try:
        for n in range(TRIALS):
            for path in names[n % len(names) :] + names[: n % len(names)]:
                trials[path].append(trial(dom, functools.partial(paths[path], n)))
                print(f"trial {n + 1} {path}: {described(trials[path][-1])}", flush=True)
    finally:
        short.close()
        across.close()
    return trials


def main() -> Path:
    lab = lab_stack.up()
    monitor = monitor_setting(lab)
    print(f"monitor: {monitor}")
    with (
        tempfile.TemporaryDirectory(prefix="hostsnap-bench-") as state,
        rbd_bench_domain(lab, NAME) as dom,
    ):
        # QEMU opens the short freeze's overlays under the state directory: it must get there.
        Path(state).chmod(0o711)
        guest_agent.command(dom, "guest-exec", path="/bin/sh", arg=["-c", WRITER])
        time.sleep(2)
        commits, started = paxos_commits(lab), time.monotonic()
        trials = run_trials(lab, dom, Path(state))
        rate = (paxos_commits(lab) - commits) / (time.monotonic() - started)
        monitor["paxos_commits_per_second_during_trials"] = rate
        baseline = longest_stall_ms(dom, lambda: time.sleep(0.2))
    ours, naive = trials["hostsnap"], trials["naive"]
    return write_report(
        "rbd_freeze",
        ratio=median_stall_ms(naive) / median_stall_ms(ours),
        goal=f"median guest stall, naive / hostsnap; goal >= {GOAL:g}",
        measured={
            **summary("hostsnap snapshot.create(quiesce=required), rbd-short-freeze", ours),
            "reference_frozen_across": summary(
                "hostsnap snapshot.create(quiesce=required), rbd_local_overlay=false",
                trials["frozen_across"],
            ),
        },
        anchor={
            **summary("virsh domfsfreeze; rbd snap create; virsh domfsthaw", naive),
            "idle_writer_longest_gap_ms": baseline,
            "monitor": monitor,
        },
    )


if __name__ == "__main__":
    main()
