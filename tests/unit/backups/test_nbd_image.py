"""qcow2 chains read through the real qemu-nbd (libnbd): the extents each layer changed, and
a new image written and read back; a failed write leaves no file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.errors import Precondition
from agent.hypervisor import nbd_image
from agent.hypervisor.extents import Extent

K64 = 64 * 1024
M = 1 << 20


def qemu_io(image: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    subprocess.run([*argv, str(image)], check=True, capture_output=True)


def create(path: Path, backing: Path | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    argv += ["-F", "qcow2", "-b", str(backing), str(path)] if backing else [str(path), "8M"]
    subprocess.run(argv, check=True)
    return path


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """base (data at 0 and 1M) <- o1 (data at 2M, 1M zeroed) <- o2 (data at 3M)."""
    base = create(tmp_path / "base.qcow2")
    qemu_io(base, f"write -P 1 0 {K64}", f"write -P 2 {M} {K64}")
    o1 = create(tmp_path / "o1.qcow2", base)
    qemu_io(o1, f"write -P 3 {2 * M} {K64}", f"write -z {M} {K64}")
    o2 = create(tmp_path / "o2.qcow2", o1)
    qemu_io(o2, f"write -P 4 {3 * M} {2 * K64}")
    return base, o1, o2


def test_full_reads_the_data_of_the_whole_chain_without_zeroes(layers):
    with nbd_image.reading(str(layers[2]), None) as reader:
        assert reader.size == 8 * M
        assert list(reader.extents()) == [
            Extent(0, K64, zero=False),
            Extent(2 * M, K64, zero=False),
            Extent(3 * M, 2 * K64, zero=False),
        ]
        assert reader.read(3 * M, 4) == b"\x04" * 4


def test_incremental_reads_only_the_layers_above_the_one_given_zeroes_included(layers):
    with nbd_image.reading(str(layers[2]), 3) as since_base:  # base is depth 3
        assert list(since_base.extents()) == [
            Extent(M, K64, zero=True),
            Extent(2 * M, K64, zero=False),
            Extent(3 * M, 2 * K64, zero=False),
        ]
    with nbd_image.reading(str(layers[2]), 2) as since_o1:
        assert list(since_o1.extents()) == [Extent(3 * M, 2 * K64, zero=False)]


def test_a_new_image_is_written_and_reads_back(tmp_path: Path):
    path = tmp_path / "restored.qcow2"
    with nbd_image.writing_new(str(path), 4 * M) as writer:
        writer.write(M, b"\x07" * K64)
        writer.zero(0, K64)

    with nbd_image.reading(str(path), None) as reader:
        assert list(reader.extents()) == [Extent(M, K64, zero=False)]
        assert reader.read(M, K64) == b"\x07" * K64


def test_a_failed_write_leaves_no_image_and_an_existing_one_is_not_touched(tmp_path: Path):
    path = tmp_path / "restored.qcow2"
    with pytest.raises(RuntimeError):
        with nbd_image.writing_new(str(path), 4 * M) as writer:
            writer.write(0, b"x" * 512)
            raise RuntimeError("the target broke")
    assert not path.exists()

    path.write_text("someone's")
    with pytest.raises(Precondition):
        with nbd_image.writing_new(str(path), 4 * M):
            pass
    assert path.read_text() == "someone's"
