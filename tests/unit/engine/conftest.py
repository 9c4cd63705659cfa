"""The engine tests' host (world.py), made fresh for each test and removed after it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.hypervisor import qemu_img
from tests.unit.engine import images
from tests.unit.engine.world import World


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # Not under pytest's tmp_path: its parents are closed to others, and the short freeze
    # refuses an overlay directory QEMU's user could not reach (rbd_overlay.unusable_because).
    root = Path(tempfile.mkdtemp(prefix="hostsnap-engine-"))
    root.chmod(0o755)
    real_has_own_data = qemu_img.has_own_data

    def has_own_data(path: str) -> bool:
        """An overlay over RBD is read without its backing (there is no Ceph here); every
        other image as the agent reads it, with the real qemu-img."""
        backing = qemu_img.backing_file(path) if os.path.isfile(path) else None
        if backing is not None and backing.startswith("rbd:"):
            return images.has_own_data(images.without_backing(path))
        return real_has_own_data(path)

    monkeypatch.setattr(qemu_img, "has_own_data", has_own_data)
    made = World(root, monkeypatch)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)
