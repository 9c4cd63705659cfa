"""bench/chain_depth builds real chains of the asked depth whose layers each own their slice,
so a read of a slice goes down to the layer that wrote it; the flattened copy holds the same
data; `qemu-img bench` runs on the chain as the benchmark calls it."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench import chain_depth

DEPTH = 3
SIZE = 4 * 1024 * 1024


@pytest.fixture
def chain(tmp_path):
    return chain_depth.build_chain(tmp_path / "chain", DEPTH, SIZE)


def qemu_img_json(*argv):
    out = subprocess.run(["qemu-img", *argv, "--output=json"], capture_output=True, check=True)
    return json.loads(out.stdout)


def reads_pattern(image, pattern, offset, length):
    done = subprocess.run(
        ["qemu-io", "-r", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}", image],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and "verification failed" not in done.stdout


def test_chain_has_the_asked_depth_on_one_base(chain):
    infos = qemu_img_json("info", "--backing-chain", str(chain[-1]))
    assert len(chain) == DEPTH
    assert [info["filename"] for info in infos] == [str(p) for p in reversed(chain)]
    assert "backing-filename" not in infos[-1]
    assert all(info["virtual-size"] == SIZE for info in infos)


def test_each_layer_reads_its_pattern_at_its_slice_through_the_top(chain):
    top = str(chain[-1])
    for layer in range(1, DEPTH):
        offset, length = chain_depth.slice_of(layer, DEPTH, SIZE)
        assert reads_pattern(top, chain_depth.pattern_of(layer), offset, length), layer
    base_slice = chain_depth.slice_of(0, DEPTH, SIZE)
    assert reads_pattern(top, chain_depth.pattern_of(0), *base_slice)
    # What the slices leave over at the end (4 MiB is not a multiple of 3 clusters).
    end = chain_depth.slice_of(DEPTH, DEPTH, SIZE)[0]
    assert end < SIZE
    assert reads_pattern(top, chain_depth.pattern_of(0), end, SIZE - end)
    assert not reads_pattern(top, chain_depth.pattern_of(DEPTH - 1), *base_slice)


def test_a_read_of_a_slice_walks_down_to_the_layer_that_owns_it(chain):
    """qemu-img map's depth counts the layers a read passes before it finds its data."""
    extents = qemu_img_json("map", str(chain[-1]))
    for layer in range(DEPTH):
        offset, length = chain_depth.slice_of(layer, DEPTH, SIZE)
        overlapping = [
            e for e in extents if e["start"] < offset + length and e["start"] + e["length"] > offset
        ]
        assert {e["depth"] for e in overlapping} == {DEPTH - 1 - layer}, layer
        assert all(e["data"] for e in overlapping)


def test_the_flattened_image_stands_alone_with_the_same_data(chain, tmp_path):
    flat = chain_depth.flatten(chain[-1], tmp_path / "flat.qcow2")
    assert len(qemu_img_json("info", "--backing-chain", str(flat))) == 1
    compared = subprocess.run(["qemu-img", "compare", str(chain[-1]), str(flat)], check=False)
    assert compared.returncode == 0


def test_timed_read_runs_qemu_img_bench_across_the_chain(chain):
    step = chain_depth.step_covering(SIZE, 64)
    trial = chain_depth.timed_read(chain[-1], reads=64, step=step, cache="writeback")
    assert step * 63 + 4096 <= SIZE < step * 65
    assert 0 < trial.run_s <= trial.wall_s


def test_bench_reads_4k_one_at_a_time_stepping_across_the_whole_disk(chain):
    step = chain_depth.step_covering(SIZE, 64)
    argv = chain_depth.bench_argv(chain[-1], reads=64, step=step, cache="writeback")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "64 read requests, 4096 bytes each, 1 in parallel (starting at offset 0, " in out
    assert f"step size {step})" in out
