"""qcow2 images read and written through qemu-nbd with python3-libnbd: which extents a chain's
upper layers changed (NBD block status, `qemu:allocation-depth` and `base:allocation`), their
data, and a new image written extent by extent. libnbd starts qemu-nbd itself (systemd socket
activation) and ends it when the handle closes."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import nbd
except ImportError:  # python3-libnbd; without it, no backups of file volumes
    nbd = None

from agent.errors import OperationFailed, Precondition
from agent.hypervisor.extents import Extent, coalesce

DEPTH = "qemu:allocation-depth"
ALLOCATION = "base:allocation"
# The most one block status or read request asks for (NBD servers cap requests at 32 MiB).
REQUEST = 32 << 20


def _handle() -> nbd.NBD:
    if nbd is None:
        raise Precondition(
            "python3-libnbd is not installed on this host: file volumes cannot be backed up or "
            "restored",
            reason="NBD_BINDINGS_MISSING",
        )
    return nbd.NBD()


def _collect(
    runs: dict[str, list[tuple[int, int]]], context: str, start: int, entries: list[int], err: int
) -> int:
    """libnbd's block status callback: (length, flags) runs of each meta context."""
    runs[context].extend(zip(entries[0::2], entries[1::2], strict=True))
    return 0


class LayerReader:
    """A qcow2 image with its backing chain, read-only: its size, the extents changed above
    the layer `since_depth` of the chain (1: the image itself, 2: its backing, ...; None:
    every extent with data), and their data."""

    def __init__(self, handle: nbd.NBD, since_depth: int | None) -> None:
        self._handle = handle
        self._since = since_depth
        self.size: int = handle.get_size()

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._changed())

    def _changed(self) -> Iterator[Extent]:
        offset = 0
        while offset < self.size:
            runs: dict[str, list[tuple[int, int]]] = {DEPTH: [], ALLOCATION: []}
            collect = functools.partial(_collect, runs)
            self._handle.block_status(min(REQUEST, self.size - offset), offset, collect)
            depths, zeroes = runs[DEPTH], runs[ALLOCATION]
            end = offset + min(sum(n for n, _ in depths), sum(n for n, _ in zeroes))
            if end <= offset:
                raise OperationFailed(f"qemu-nbd reported no block status at offset {offset}")
            yield from self._classify(offset, end, depths, zeroes)
            offset = end

    def _classify(
        self,
        offset: int,
        end: int,
        depths: list[tuple[int, int]],
        zeroes: list[tuple[int, int]],
    ) -> Iterator[Extent]:
        """The extents of [offset, end) to send, from the two contexts' runs (which split
        the range at different places)."""
        d, z = iter(depths), iter(zeroes)
        (d_left, depth), (z_left, flags) = next(d), next(z)
        while offset < end:
            step = min(d_left, z_left, end - offset)
            is_zero = bool(flags & nbd.STATE_ZERO)
            if self._since is None:
                if depth > 0 and not is_zero:
                    yield Extent(offset, step, zero=False)
            elif 0 < depth < self._since:
                yield Extent(offset, step, zero=is_zero)
            offset, d_left, z_left = offset + step, d_left - step, z_left - step
            if d_left == 0 and offset < end:
                d_left, depth = next(d)
            if z_left == 0 and offset < end:
                z_left, flags = next(z)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._handle.pread(length, offset))


@contextmanager
def reading(path: str, since_depth: int | None) -> Iterator[LayerReader]:
    """`path` with its chain, read-only (the running domain keeps writing above it)."""
    handle = _handle()
    handle.add_meta_context(DEPTH)
    handle.add_meta_context(ALLOCATION)
    try:
        handle.connect_systemd_socket_activation(["qemu-nbd", "-r", "-A", "-f", "qcow2", path])
    except nbd.Error as e:
        raise OperationFailed(f"qemu-nbd could not open {path}: {e}") from e
    try:
        if not (handle.can_meta_context(DEPTH) and handle.can_meta_context(ALLOCATION)):
            raise OperationFailed(f"qemu-nbd gives no allocation depth for {path}")
        yield LayerReader(handle, since_depth)
    except nbd.Error as e:
        raise OperationFailed(f"reading {path} through qemu-nbd: {e}") from e
    finally:
        handle.shutdown()


class ImageWriter:
    """A new qcow2 image written extent by extent."""

    def __init__(self, handle: nbd.NBD) -> None:
        self._handle = handle

    def write(self, offset: int, data: bytes) -> None:
        for start in range(0, len(data), REQUEST):
            self._handle.pwrite(data[start : start + REQUEST], offset + start)

    def zero(self, offset: int, length: int) -> None:
        while length:
            piece = min(length, REQUEST)
            self._handle.zero(piece, offset)
            offset, length = offset + piece, length - piece


@contextmanager
def writing_new(path: str, size: int) -> Iterator[ImageWriter]:
    """A qcow2 image made at `path` (which must not exist), flushed once written; removed
    when the writing fails."""
    if os.path.lexists(path):
        raise Precondition(f"{path} exists already", reason="IMAGE_EXISTS")
    handle = _handle()
    done = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise OperationFailed(f"qemu-img create {path}: {done.stderr.strip()}")
    try:
        try:
            handle.connect_systemd_socket_activation(["qemu-nbd", "-f", "qcow2", path])
            yield ImageWriter(handle)
            handle.flush()
        finally:
            handle.shutdown()
    except nbd.Error as e:
        os.unlink(path)
        raise OperationFailed(f"writing {path} through qemu-nbd: {e}") from e
    except BaseException:
        os.unlink(path)  # made here, and not fully written
        raise
