"""The Images port: RBD images through librbd (CephRbd), qcow2 images through qemu-nbd."""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

from agent.errors import Precondition
from agent.hypervisor import nbd_image
from agent.hypervisor.ceph_rbd import CephRbd
from agent.hypervisor.ports import ExtentReader, ExtentWriter
from agent.model import RbdSource


class ImageIO:
    def __init__(self, rbd: CephRbd) -> None:
        self._rbd = rbd

    def reading_rbd(
        self, source: RbdSource, snapshot: str, since: str | None
    ) -> AbstractContextManager[ExtentReader]:
        return self._rbd.reading_snapshot(source, snapshot, since)

    def reading_file(
        self, path: str, since_depth: int | None
    ) -> AbstractContextManager[ExtentReader]:
        return nbd_image.reading(path, since_depth)

    def creating_rbd(self, source: RbdSource, size: int) -> AbstractContextManager[ExtentWriter]:
        return self._rbd.creating(source, size)

    def overwriting_rbd(self, source: RbdSource, size: int) -> AbstractContextManager[ExtentWriter]:
        return self._rbd.overwriting(source, size)

    def creating_file(self, path: str, size: int) -> AbstractContextManager[ExtentWriter]:
        return nbd_image.writing_new(path, size)

    def remove_rbd(self, source: RbdSource) -> None:
        self._rbd.remove_image(source)

    def remove_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def publish_rbd(self, staged: RbdSource, final: RbdSource) -> None:
        self._rbd.rename_image(staged, final)

    def publish_file(self, staged: str, final: str) -> None:
        publish_file(staged, final)


def publish_file(staged: str, final: str) -> None:
    """A hard link never replaces a file, unlike a rename: an image that appeared under
    `final` meanwhile (someone else's) stays."""
    try:
        os.link(staged, final)
    except FileExistsError as e:
        if not os.path.samefile(staged, final):
            raise Precondition(f"{final} exists already", reason="IMAGE_EXISTS") from e
    except FileNotFoundError:
        if os.path.exists(final):
            return  # published before a kill: only the staged name was left to drop
        raise
    os.unlink(staged)
