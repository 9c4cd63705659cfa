"""Live consolidation throughput: hostsnap's consolidate on a running domain against
`qemu-img commit` of an equal chain offline, same run. Goal: live at least 0.9x offline.

One chain is built once with qemu-io: a base written whole, then overlays named as hostsnap
names its own (`<base>.hostsnap-<id>`), each writing one slice of its own with a pattern of its
own. No snapshot in the journal keeps them, so hostsnap merges the whole stretch in one active
commit of the top into the base (libvirt block commit, pivot, the overlays deleted); the
anchor does the same stretch offline, `qemu-img commit -b BASE TOP` on a byte copy. Both copy
the overlays' data (overlays x layer size) into an allocated base; throughput is that amount
over the wall time. hostsnap's time is the whole consolidate() call, also reported in its three
phases: before the block commit (checks, chain health), the block job (commit started to pivot
returned), after the pivot (overlays deleted, chain verified).

Every trial has its own byte copy of the chain for each side: the live copies are the disks
vdb, vdc, ... of one disposable domain (its /data disk vda is a copy of the lab's; nothing in
the guest touches the others), the offline copy is made just before its trial, while that
domain runs. Before each timed run the chain's files are flushed and, with `--cache cold`
(the default), dropped from the page cache; each timing ends with an fsync of the base.
Trials alternate which side goes first. After each trial both bases must read exactly as the
chain did (qemu-img compare against the untouched chain): a merge that lost or changed data
fails the benchmark instead of being reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt

from agent.config import AgentConfig
from agent.hypervisor import qemu_img
from agent.hypervisor.libvirt_host import LibvirtHost
from agent.operations import consolidate, volumes
from agent.operations.consolidate import ChainRequest
from agent.operations.services import Services
from bench.bench_domain import disposable_domain
from bench.chain_depth import WRITE_CHUNK, write_pattern
from bench.report import write_report
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.run import run

NAME = "bench-consolidate"
OVERLAYS = 4
LAYER_MIB = 256
TRIALS = 5
GOAL = 0.9
MIB = 1024 * 1024
BASE_PATTERN = 1  # overlay k (from 0) writes BASE_PATTERN + 1 + k; 0 stays "never written"
MAX_OVERLAYS = 254
MAX_TRIALS = 24  # one disk each, vdb to vdy
COPY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Chain:
    layers: tuple[Path, ...]  # base first

    @property
    def base(self) -> Path:
        return self.layers[0]

    @property
    def top(self) -> Path:
        return self.layers[-1]


@dataclass(frozen=True)
class LiveRun:
    """hostsnap's consolidation of one chain, in three consecutive phases."""

    before_s: float  # the call until the block commit starts: checks, chain health, journal
    block_job_s: float  # libvirt's block commit started until its pivot returned
    after_s: float  # the pivot until the call returned (layers deleted, chain verified), fsync

    @property
    def wall_s(self) -> float:
        return self.before_s + self.block_job_s + self.after_s


@dataclass(frozen=True)
class Trial:
    first: str  # "live" or "offline"
    live: LiveRun
    offline_s: float  # the qemu-img commit process, then an fsync of the base


class TimedHost(LibvirtHost):
    """The agent's libvirt adapter, noting when a block commit starts and its pivot ends."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.commit_started = 0.0
        self.pivot_done = 0.0

    def block_commit(
        self,
        name: str,
        target: str,
        top: str | None,
        base: str | None,
        *,
        active: bool,
        bandwidth_mib: int = 0,
    ) -> None:
        self.commit_started = time.perf_counter()
        super().block_commit(name, target, top, base, active=active, bandwidth_mib=bandwidth_mib)

    def block_job_pivot(self, name: str, target: str) -> None:
        super().block_job_pivot(name, target)
        self.pivot_done = time.perf_counter()


def build_chain(directory: Path, overlays: int, layer_bytes: int) -> Chain:
    """The base (`<NAME>.qcow2`, `overlays` x `layer_bytes`, written whole), then the overlays,
    overlay k owning slice k."""
    directory.mkdir(parents=True)
    base = directory / f"{NAME}.qcow2"
    size = overlays * layer_bytes
    qemu_img.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), str(size)])
    write_pattern(base, BASE_PATTERN, 0, size)
    layers = [base]
    for k in range(overlays):
        overlay = Path(volumes.overlay_path(str(base), uuid.uuid4().hex))
        qemu_img.create_overlay(str(overlay), str(layers[-1]))
        write_pattern(overlay, BASE_PATTERN + 1 + k, k * layer_bytes, layer_bytes)
        layers.append(overlay)
    return Chain(tuple(layers))


def check_chain(chain: Chain, layer_bytes: int) -> None:
    """Through the top, each overlay's slice reads its pattern (the base holds another): the
    data a merge has to copy is there."""
    commands: list[str] = []
    for k in range(len(chain.layers) - 1):
        end = (k + 1) * layer_bytes
        for start in range(k * layer_bytes, end, WRITE_CHUNK):
            size = min(WRITE_CHUNK, end - start)
            commands += ["-c", f"read -P {BASE_PATTERN + 1 + k} {start} {size}"]
    qemu_img.run(["qemu-io", "-r", "-f", "qcow2", *commands, str(chain.top)])


def copy_chain(chain: Chain, directory: Path) -> Chain:
    """A byte copy of every layer in `directory`, each backed by the copy below it."""
    directory.mkdir()
    copies: list[Path] = []
    for layer in chain.layers:
        copy = directory / layer.name
        run(["cp", "--reflink=auto", str(layer), str(copy)], timeout=COPY_TIMEOUT)
        if copies:
            qemu_img.rebase_unsafe(str(copy), str(copies[-1]), "qcow2")
        copies.append(copy)
    return Chain(tuple(copies))


def settle(chain: Chain, cache: str) -> None:
    """Nothing of an earlier step left to write back; cold: the chain out of the page cache
    (these files only, by fadvise: the other users of the machine keep theirs)."""
    for path in chain.layers:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if cache == "cold":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    os.sync()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_content(expected: Chain, image: Path) -> None:
    """`image` must read, byte for byte, what `expected`'s top read before any merge."""
    done = run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(expected.top), str(image)],
        timeout=COPY_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{image} does not read as the chain it was merged from: "
            f"{(done.stdout + done.stderr).strip()}"
        )


def consolidate_live(
    svc: Services, host: TimedHost, target: str, chain: Chain, cache: str
) -> LiveRun:
    """hostsnap's consolidation of disk `target` (on `chain`), timed; `host` is `svc`'s
    libvirt adapter. It must have merged the whole chain into its base in one run."""
    settle(chain, cache)
    started = time.perf_counter()
    result = consolidate.consolidate(svc, ChainRequest(NAME, (target,)))
    fsync(chain.base)
    ended = time.perf_counter()
    (disk,) = result.disks
    removed = {str(p) for p in chain.layers[1:]}
    if (
        disk.active_image != str(chain.base)
        or disk.depth_after != 1
        or set(disk.removed) != removed
    ):
        raise RuntimeError(f"hostsnap consolidated {target} to {disk}, expected {chain.base} alone")
    job = svc.journal.get(result.job_id)
    if [s.name for s in job.steps].count("merge") != 1 or not started < host.commit_started:
        raise RuntimeError(f"job {job.id} did not merge the chain in one block commit: {job.steps}")
    return LiveRun(
        host.commit_started - started,
        host.pivot_done - host.commit_started,
        ended - host.pivot_done,
    )


def commit_offline(chain: Chain, cache: str) -> float:
    """Seconds of `qemu-img commit` of the whole chain into its base."""
    settle(chain, cache)
    started = time.perf_counter()
    qemu_img.run(["qemu-img", "commit", "-q", "-f", "qcow2", "-b", str(chain.base), str(chain.top)])
    fsync(chain.base)
    return time.perf_counter() - started


def target_of(n: int) -> str:
    return f"vd{chr(ord('b') + n)}"


def disk_xml(target: str, image: Path) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(str(image))}/><target dev='{target}' bus='virtio'/></disk>"
    )


@contextlib.contextmanager
def chain_domain(
    lab: lab_stack.Lab, work: Path, chains: list[Chain]
) -> Iterator[libvirt.virDomain]:
    """The disposable domain: vda a copy of the lab's data disk (the guest mounts it and its
    writer writes there), then one disk per chain."""
    guest_disk = work / f"{NAME}-data.qcow2"

    def make_disk() -> str:
        run(["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(guest_disk)])
        disks = [disk_xml("vda", guest_disk)]
        disks += [disk_xml(target_of(n), chain.top) for n, chain in enumerate(chains)]
        return "".join(disks)

    def remove_disk() -> None:
        guest_disk.unlink(missing_ok=True)
        lab.paths.console_log(NAME).unlink(missing_ok=True)

    with disposable_domain(lab, NAME, make_disk, remove_disk) as dom:
        yield dom


def run_trials(
    svc: Services, host: TimedHost, work: Path, pristine: Chain, live: list[Chain], cache: str
) -> list[Trial]:
    """Trial n merges live chain n (disk target_of(n)) and a fresh offline copy, the live one
    first in even trials; both results are then checked against the pristine chain."""
    trials = []
    for n, chain in enumerate(live):
        offline = copy_chain(pristine, work / f"offline-{n + 1}")
        if n % 2 == 0:
            first = "live"
            live_run = consolidate_live(svc, host, target_of(n), chain, cache)
            offline_s = commit_offline(offline, cache)
        else:
            first = "offline"
            offline_s = commit_offline(offline, cache)
            live_run = consolidate_live(svc, host, target_of(n), chain, cache)
        same_content(pristine, chain.base)
        same_content(pristine, offline.base)
        for layer in offline.layers:
            layer.unlink()
        trials.append(Trial(first, live_run, offline_s))
        print(
            f"trial {n + 1} ({first} first): live {live_run.wall_s:.2f} s (before the commit "
            f"{live_run.before_s:.2f}, block job {live_run.block_job_s:.2f}, after the pivot "
            f"{live_run.after_s:.2f}), offline {offline_s:.2f} s, "
            f"ratio {offline_s / live_run.wall_s:.2f}; both bases read as the chain did",
            flush=True,
        )
    return trials


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.consolidate", description=__doc__)
    parser.add_argument("--overlays", type=int, default=OVERLAYS, help="layers above the base")
    parser.add_argument("--layer-mib", type=int, default=LAYER_MIB, help="new data per overlay")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument(
        "--cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: the chain's files are dropped from the page cache before each timed run",
    )
    args = parser.parse_args(list(argv))
    if not 1 <= args.overlays <= MAX_OVERLAYS:
        parser.error(f"--overlays must be between 1 and {MAX_OVERLAYS}")
    if not 1 <= args.trials <= MAX_TRIALS or args.layer_mib < 1:
        parser.error(f"--trials must be between 1 and {MAX_TRIALS}, --layer-mib positive")
    return args


def mib_per_s(mib: float, seconds: list[float]) -> list[float]:
    return [mib / s for s in seconds]


def report(args: argparse.Namespace, trials: list[Trial]) -> Path:
    committed_mib = args.overlays * args.layer_mib
    live_s = [t.live.wall_s for t in trials]
    block_job_s = [t.live.block_job_s for t in trials]
    offline_s = [t.offline_s for t in trials]
    live_rate = committed_mib / statistics.median(live_s)
    block_job_rate = committed_mib / statistics.median(block_job_s)
    offline_rate = committed_mib / statistics.median(offline_s)
    print(
        f"median: live {live_rate:.0f} MiB/s (its block job alone {block_job_rate:.0f} MiB/s), "
        f"offline {offline_rate:.0f} MiB/s; {committed_mib} MiB committed per run"
    )
    return write_report(
        "consolidate",
        ratio=live_rate / offline_rate,
        goal=f"median throughput, live consolidation / offline qemu-img commit; goal >= {GOAL:g}",
        measured={
            "tool": "hostsnap consolidate() of a running domain's disk: libvirt active block "
            "commit of the top into the base, pivot, overlays deleted, chain verified",
            "seconds": live_s,
            "mib_per_s": mib_per_s(committed_mib, live_s),
            "median_s": statistics.median(live_s),
            "median_mib_per_s": live_rate,
            "ratio_per_trial": [t.offline_s / t.live.wall_s for t in trials],
            "phases_s": {
                "before_commit": [t.live.before_s for t in trials],
                "block_job": block_job_s,
                "after_pivot": [t.live.after_s for t in trials],
            },
            "block_job_median_mib_per_s": block_job_rate,
            "block_job_ratio": block_job_rate / offline_rate,
            "first": [t.first for t in trials],
            "verified": "after each trial both bases compared equal (qemu-img compare) to the "
            "chain before the merge",
            "parameters": {
                "overlays": args.overlays,
                "layer_mib": args.layer_mib,
                "base_mib": committed_mib,
                "committed_mib": committed_mib,
                "trials": args.trials,
                "cache": args.cache,
                "layout": "base written whole; overlay k owns slice k; one run, top into base",
            },
        },
        anchor={
            "tool": "qemu-img commit -b BASE TOP of a byte copy of the chain, offline",
            "seconds": offline_s,
            "mib_per_s": mib_per_s(committed_mib, offline_s),
            "median_s": statistics.median(offline_s),
            "median_mib_per_s": offline_rate,
        },
    )


def main(argv: Sequence[str] = ()) -> Path:
    args = parse_args(argv)
    lab = lab_stack.up()
    with tempfile.TemporaryDirectory(prefix=f"{NAME}-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # QEMU opens the live chains in here
        pristine = build_chain(work / "pristine", args.overlays, args.layer_mib * MIB)
        check_chain(pristine, args.layer_mib * MIB)
        live = [copy_chain(pristine, work / f"live-{n + 1}") for n in range(args.trials)]
        svc = Services.open(AgentConfig(state_dir=work / "state", ceph_conf=str(lab.ceph_conf)))
        host = svc.host = TimedHost(svc.config.libvirt_uri)
        try:
            with chain_domain(lab, work, live):
                trials = run_trials(svc, host, work, pristine, live, args.cache)
        finally:
            svc.close()
    return report(args, trials)


if __name__ == "__main__":
    main(sys.argv[1:])
