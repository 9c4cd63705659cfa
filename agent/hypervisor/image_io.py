"""The Images port: RBD images through librbd (CephRbd), qcow2 images through qemu-nbd."""

from __future__ import annotations

from contextlib import AbstractContextManager

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

    def creating_file(self, path: str, size: int) -> AbstractContextManager[ExtentWriter]:
        return nbd_image.writing_new(path, size)

    def remove_rbd(self, source: RbdSource) -> None:
        self._rbd.remove_image(source)
