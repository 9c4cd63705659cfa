"""Read cost against qcow2 chain depth: `qemu-img bench` reads spread over the whole disk
through chains of 1, 4, 16 and 64 layers (built with hostsnap's own overlay call), against the
same data flattened into one image by `qemu-img convert`, same run.

The base holds the whole disk and every overlay above it owns one slice, so a read goes down
the chain to the layer that holds its slice. Trials alternate between the images; the figure
is the median wall time of the `qemu-img bench` process (opening the chain included). The
headline is the deepest chain against the flattened image: what consolidation buys.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.hypervisor import qemu_img
from bench.report import write_report

DEPTHS = (1, 4, 16, 64)
SIZE_MIB = 256
READS = 16384
TRIALS = 3
READ_SIZE = 4096
CLUSTER = 64 * 1024  # qcow2's default cluster size
WRITE_CHUNK = 64 * 1024 * 1024
MAX_DEPTH = 255  # one pattern byte per layer, and 0 stays "never written"
RUN_COMPLETED = re.compile(r"Run completed in ([0-9.]+) seconds")


@dataclass(frozen=True)
class Trial:
    wall_s: float  # the whole qemu-img process: start, opening every layer, the reads
    run_s: float  # qemu-img's own figure for the reads alone


def pattern_of(layer: int) -> int:
    return layer + 1


def slice_of(layer: int, depth: int, size: int) -> tuple[int, int]:
    """(offset, length) of the slice that `layer` of a `depth`-layer chain owns. Slices are
    whole clusters: a partial cluster written into an overlay would pull the rest of that
    cluster up from below, and the layers' slices would overlap."""
    length = size // depth // CLUSTER * CLUSTER
    return layer * length, length


def write_pattern(image: Path, pattern: int, offset: int, length: int) -> None:
    # In chunks: qemu-io holds one buffer as large as each write.
    commands: list[str] = []
    for start in range(offset, offset + length, WRITE_CHUNK):
        size = min(WRITE_CHUNK, offset + length - start)
        commands += ["-c", f"write -P {pattern} {start} {size}"]
    qemu_img.run(["qemu-io", "-f", "qcow2", *commands, str(image)])


def build_chain(directory: Path, depth: int, size: int) -> list[Path]:
    """A qcow2 chain of `depth` images, base first: the base written whole, then each overlay
    created on the one before and given its own slice before the next one is made."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "layer-000.qcow2"
    qemu_img.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), str(size)])
    write_pattern(base, pattern_of(0), 0, size)
    layers = [base]
    for layer in range(1, depth):
        overlay = directory / f"layer-{layer:03d}.qcow2"
        qemu_img.create_overlay(str(overlay), str(layers[-1]))
        write_pattern(overlay, pattern_of(layer), *slice_of(layer, depth, size))
        layers.append(overlay)
    return layers


def flatten(top: Path, target: Path) -> Path:
    qemu_img.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(top), str(target)])
    return target


def direct_io_works(directory: Path) -> bool:
    """`-t none` opens the images with O_DIRECT, which some filesystems (tmpfs) refuse."""
    probe = directory / "direct-io-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def bench_argv(image: Path, *, reads: int, step: int, cache: str) -> list[str]:
    return [
        "qemu-img",
        "bench",
        "-f",
        "qcow2",
        "-t",
        cache,
        "-c",
        str(reads),
        "-d",
        "1",
        "-s",
        str(READ_SIZE),
        "-S",
        str(step),
        str(image),
    ]


def step_covering(size: int, reads: int) -> int:
    """The largest step, in whole read sizes, that keeps `reads` reads inside the disk."""
    return size // reads // READ_SIZE * READ_SIZE


def timed_read(image: Path, *, reads: int, step: int, cache: str) -> Trial:
    started = time.perf_counter()
    out = qemu_img.run(bench_argv(image, reads=reads, step=step, cache=cache))
    wall = time.perf_counter() - started
    found = RUN_COMPLETED.search(out)
    if found is None:
        raise RuntimeError(f"qemu-img bench printed no run time: {out.strip()}")
    return Trial(wall_s=wall, run_s=float(found.group(1)))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chain_depth", description=__doc__)
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--size-mib", type=int, default=SIZE_MIB, help="virtual disk size")
    parser.add_argument("--reads", type=int, default=READS, help="4 KiB reads per trial")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument(
        "--cache",
        choices=("auto", "none", "writeback"),
        default="auto",
        help="qemu-img cache mode; auto: none where O_DIRECT works, else writeback",
    )
    args = parser.parse_args(list(argv))
    size = args.size_mib * 1024 * 1024
    if not all(1 <= depth <= MAX_DEPTH for depth in args.depths):
        parser.error(f"each depth must be between 1 and {MAX_DEPTH}")
    if size // max(args.depths) < CLUSTER:
        parser.error(f"--size-mib gives the deepest chain's layers less than {CLUSTER} bytes")
    if args.trials < 1 or args.reads < 1 or step_covering(size, args.reads) < READ_SIZE:
        parser.error("--trials and --reads must be positive, --reads at most size / 4 KiB")
    args.depths = sorted(set(args.depths))
    return args


def print_table(
    medians: dict[int, float], run_medians: dict[int, float], flat: float, flat_run: float
) -> None:
    shallowest = min(medians)
    print(f"{'depth':>5}  {'median_s':>8}  {'run_s':>6}  {f'vs_d{shallowest}':>6}  vs_flat")
    for depth, median in medians.items():
        print(
            f"{depth:>5}  {median:>8.3f}  {run_medians[depth]:>6.3f}  "
            f"{median / medians[shallowest]:>6.2f}  {median / flat:>7.2f}"
        )
    print(f"{'flat':>5}  {flat:>8.3f}  {flat_run:>6.3f}  {'':>6}  {1:>7.2f}")


def build_images(workdir: Path, depths: list[int], size: int) -> dict[str, Path]:
    """The top of each chain by name ("depth-N"), and "flat": the deepest chain converted."""
    images = {
        f"depth-{depth}": build_chain(workdir / f"depth-{depth}", depth, size)[-1]
        for depth in depths
    }
    images["flat"] = flatten(images[f"depth-{max(depths)}"], workdir / "flat.qcow2")
    # Just written: with cache none, the first O_DIRECT read of a range would also wait for
    # its dirty pages to reach the disk.
    os.sync()
    return images


def run_trials(
    images: dict[str, Path], *, trials: int, reads: int, step: int, cache: str
) -> dict[str, list[Trial]]:
    """Each round reads every image once, so drift on the machine reaches all of them alike."""
    results: dict[str, list[Trial]] = {name: [] for name in images}
    for n in range(trials):
        for name, image in images.items():
            results[name].append(timed_read(image, reads=reads, step=step, cache=cache))
        walls = ", ".join(f"{name} {done[-1].wall_s:.3f} s" for name, done in results.items())
        print(f"trial {n + 1}: {walls}", flush=True)
    return results


def median_wall(trials: list[Trial]) -> float:
    return statistics.median(t.wall_s for t in trials)


def median_run(trials: list[Trial]) -> float:
    return statistics.median(t.run_s for t in trials)


def main(argv: Sequence[str] = ()) -> Path:
    args = parse_args(argv)
    size = args.size_mib * 1024 * 1024
    step = step_covering(size, args.reads)
    with tempfile.TemporaryDirectory(prefix="hostsnap-bench-chain-") as tmp:
        workdir = Path(tmp)
        cache = args.cache
        if cache == "auto":
            cache = "none" if direct_io_works(workdir) else "writeback"
        images = build_images(workdir, args.depths, size)
        trials = run_trials(images, trials=args.trials, reads=args.reads, step=step, cache=cache)
    chains = {depth: trials[f"depth-{depth}"] for depth in args.depths}
    medians = {depth: median_wall(chain) for depth, chain in chains.items()}
    run_medians = {depth: median_run(chain) for depth, chain in chains.items()}
    flat, flat_run = median_wall(trials["flat"]), median_run(trials["flat"])
    print_table(medians, run_medians, flat, flat_run)
    shallowest, deepest = min(args.depths), max(args.depths)
    return write_report(
        "chain_depth",
        ratio=medians[deepest] / flat,
        goal=(
            f"median read wall time, {deepest}-layer chain / the same data flattened; "
            "above 1 is what consolidation buys"
        ),
        measured={
            "median_wall_s": medians,
            "median_run_s": run_medians,
            "ratio_vs_flat": {depth: median / flat for depth, median in medians.items()},
            "ratio_vs_shallowest": {
                depth: median / medians[shallowest] for depth, median in medians.items()
            },
            "shallowest_depth": shallowest,
            "wall_s": {depth: [t.wall_s for t in chain] for depth, chain in chains.items()},
            "run_s": {depth: [t.run_s for t in chain] for depth, chain in chains.items()},
            "layout": "base written whole; overlay k of a depth-d chain owns slice k of d",
            "parameters": {
                "depths": args.depths,
                "virtual_size_bytes": size,
                "reads_per_trial": args.reads,
                "read_size_bytes": READ_SIZE,
                "step_bytes": step,
                "queue_depth": 1,
                "cache": cache,
                "trials": args.trials,
            },
        },
        anchor={
            "image": f"qemu-img convert -O qcow2 of the {deepest}-layer chain",
            "median_wall_s": flat,
            "median_run_s": flat_run,
            "wall_s": [t.wall_s for t in trials["flat"]],
            "run_s": [t.run_s for t in trials["flat"]],
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
