"""qemu_process reads a process's open files from /proc: tried on this test's own process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.hypervisor import qemu_process


def pid_dir_for_this_process(tmp_path: Path) -> Path:
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "dom.pid").write_text(f"{os.getpid()}\n")
    return pids


def test_a_file_open_for_writing_is_seen_and_one_open_read_only_is_not(tmp_path: Path):
    pids = pid_dir_for_this_process(tmp_path)
    image = tmp_path / "image"
    image.write_bytes(b"x")
    with image.open("rb"):
        assert qemu_process.opened_read_write("dom", str(image), pids) is False
        with image.open("r+b"):
            assert qemu_process.opened_read_write("dom", str(image), pids) is True


def test_a_file_not_open_is_not_read_write(tmp_path: Path):
    pids = pid_dir_for_this_process(tmp_path)
    assert qemu_process.opened_read_write("dom", str(tmp_path / "other"), pids) is False


def test_without_a_pid_file_it_cannot_tell(tmp_path: Path):
    assert qemu_process.opened_read_write("absent", str(tmp_path), tmp_path) is None


def test_when_the_open_files_cannot_be_read_it_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pids = pid_dir_for_this_process(tmp_path)

    def refused(path: object) -> str:
        raise PermissionError("ptrace access mode check failed")

    monkeypatch.setattr(qemu_process.os, "readlink", refused)
    assert qemu_process.opened_read_write("dom", str(tmp_path), pids) is None
