"""qemu_img.backing_file reads the qcow2 header itself: it must name what qemu-img names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.errors import NotFound, Precondition
from agent.hypervisor import qemu_img


def qemu_img_cli(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_backing_file_agrees_with_qemu_img(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", str(base), "16M")
    absolute = tmp_path / "absolute.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(absolute))
    relative = tmp_path / "relative.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", str(relative))
    on_rbd = tmp_path / "on-rbd.qcow2"
    spec = "rbd:rbd/image:conf=/etc/ceph/ceph.conf"
    qemu_img_cli("create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", spec, str(on_rbd), "16M")
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(100))
    absurd = tmp_path / "absurd.qcow2"  # the magic, a backing name at 64, 4 GiB long
    header = b"QFI\xfb" + bytes(4) + (64).to_bytes(8, "big") + (2**32 - 1).to_bytes(4, "big")
    absurd.write_bytes(header + bytes(100))

    assert qemu_img.backing_file(str(base)) is None
    assert qemu_img.backing_file(str(absolute)) == str(base) == qemu_img.info(str(absolute)).backing
    assert qemu_img.backing_file(str(relative)) == qemu_img.info(str(relative)).backing
    assert qemu_img.backing_file(str(on_rbd)) == spec
    assert qemu_img.backing_file(str(raw)) is None
    assert qemu_img.backing_file(str(absurd)) is None


def test_a_missing_image_is_not_found_and_a_missing_layer_a_broken_chain(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", str(base), "16M")
    top = tmp_path / "top.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top))
    base.unlink()

    with pytest.raises(NotFound, match="does not exist"):
        qemu_img.chain(str(tmp_path / "gone.qcow2"))
    with pytest.raises(NotFound):
        qemu_img.info(str(tmp_path / "gone.qcow2"))
    with pytest.raises(Precondition) as broken:
        qemu_img.chain(str(top))
    assert broken.value.reason == "CHAIN_BROKEN"


def test_an_offline_commit_reports_its_progress_in_order_to_the_end(tmp_path: Path):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    qemu_img_cli("create", "-q", "-f", "qcow2", str(base), "64M")
    qemu_img_cli("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top))
    subprocess.run(["qemu-io", "-c", "write -P 7 0 48M", str(top)], check=True, capture_output=True)
    seen: list[float] = []
    qemu_img.commit(str(top), progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
