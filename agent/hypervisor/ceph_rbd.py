"""RBD images and snapshots through python3-rados and python3-rbd."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC

try:
    import rados
    import rbd
except ImportError:  # python3-rados and python3-rbd are optional: without them, no RBD disks
    rados = rbd = None

from agent.errors import NotFound, OperationFailed, Precondition, Unavailable
from agent.hypervisor.extents import Extent, coalesce
from agent.model import RbdSnap, RbdSource

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10


def client_version() -> str:
    """The Ceph release of the client tools (e.g. "16.2.15"), else librados' API version."""
    try:
        out = subprocess.run(["ceph", "--version"], capture_output=True, text=True, timeout=10)
        found = re.search(r"ceph version (\S+)", out.stdout)
        if found:
            return found.group(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if rados is None:
        return ""
    api = rados.Rados().version()
    return f"librados {api.major}.{api.minor}.{api.extra}"


def printed_percentages(output: bytes) -> list[int]:
    """The percentages the rbd CLI has printed so far. Looked for in all of its output, not
    per read: its stderr is unbuffered, so "25" and "% complete" can arrive in two reads."""
    return [int(p) for p in re.findall(rb"(\d+)% complete", output)]


class CephRbd:
    """Keeps one cluster connection per Ceph config, so a call made while a guest is frozen
    does not pay for connecting."""

    def __init__(self, default_conf: str) -> None:
        self._default_conf = default_conf
        self._clusters: dict[str, rados.Rados] = {}
        self._lock = threading.Lock()

    def _cluster(self, conf: str) -> rados.Rados:
        with self._lock:
            cluster = self._clusters.get(conf)
            if cluster is None and rados is None:
                raise Precondition(
                    "Ceph's Python bindings are not installed on this host (python3-rados, "
                    "python3-rbd): RBD disks cannot be handled",
                    reason="RBD_BINDINGS_MISSING",
                )
            if cluster is None:
                try:
                    cluster = rados.Rados(conffile=conf)
                    cluster.connect(timeout=CONNECT_TIMEOUT)
                except (rados.Error, OSError) as e:
                    raise Unavailable(f"Ceph (config {conf}) cannot be reached: {e}") from e
                self._clusters[conf] = cluster
            return cluster

    def connect(self, conf: str) -> None:
        """Connects to the cluster of `conf` (Unavailable when it does not answer)."""
        self._cluster(conf)

    @staticmethod
    def client_version() -> str:
        return client_version()

    def close(self) -> None:
        with self._lock:
            for cluster in self._clusters.values():
                cluster.shutdown()
            self._clusters.clear()

    @contextmanager
    def _image(
        self, source: RbdSource, read_only: bool = False, snapshot: str | None = None
    ) -> Iterator[rbd.Image]:
        with self._ioctx(source) as ioctx:
            try:
                image = rbd.Image(ioctx, source.image, snapshot=snapshot, read_only=read_only)
            except rbd.ImageNotFound as e:
                where = f"{source.spec}@{snapshot}" if snapshot else source.spec
                raise NotFound(f"RBD image {where} does not exist") from e
            with image:
                yield image

    @contextmanager
    def _ioctx(self, source: RbdSource) -> Iterator[rados.Ioctx]:
        conf = source.config_file or self._default_conf
        cluster = self._cluster(conf)
        try:
            with cluster.open_ioctx(source.pool) as ioctx:
                yield ioctx
        except rados.ObjectNotFound as e:
            raise NotFound(f"Ceph pool {source.pool!r} does not exist") from e
        except rados.Error as e:
            with self._lock:  # a broken connection is made anew on the next call
                self._clusters.pop(conf, None)
            raise Unavailable(f"Ceph (config {conf}) failed: {e}") from e

    def snapshots(self, source: RbdSource) -> list[RbdSnap]:
        """The image's user snapshots. Those of other namespaces (rbd-mirror's, a group's, a
        clone v2 parent's in the trash) are not listed, and a snapshot removed by someone else
        while this reads is left out."""
        with self._image(source, read_only=True) as image:
            found = []
            for s in image.list_snaps():
                if s.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) != (
                    rbd.RBD_SNAP_NAMESPACE_TYPE_USER
                ):
                    continue
                try:
                    # Ceph returns a naive datetime in UTC.
                    created = image.get_snap_timestamp(s["id"]).replace(tzinfo=UTC).timestamp()
                    protected = bool(image.is_protected_snap(s["name"]))
                except rbd.ImageNotFound:
                    continue
                found.append(RbdSnap(s["name"], int(s["id"]), created, protected))
            return found

    def parents(self, source: RbdSource) -> list[str]:
        """The clone's ancestry, nearest first, as "pool/image@snapshot" (empty: no clone)."""
        found: list[str] = []
        current = source
        while True:
            with self._image(current) as image:
                try:
                    pool, name, snap = image.parent_info()
                except rbd.ImageNotFound:
                    return found
            found.append(f"{pool}/{name}@{snap}")
            current = RbdSource(pool, name, current.monitors, current.config_file)

    def flatten(self, source: RbdSource, progress: Callable[[float], None]) -> None:
        """Copies the parent's data into a clone, which then stands alone."""
        log.info("RBD %s: flattening", source.spec)

        def report(done: int, total: int) -> int:
            progress(done / max(total, 1))
            return 0  # librbd stops the flatten on anything else

        with self._image(source) as image:
            try:
                image.flatten(on_progress=report)
            except rbd.InvalidArgument as e:
                raise Precondition(
                    f"RBD image {source.spec} is not a clone", reason="NOT_A_CLONE"
                ) from e
            except rbd.Error as e:
                raise OperationFailed(f"flattening {source.spec} failed: {e}") from e

    def watchers(self, source: RbdSource) -> list[str]:
        """The clients watching the image (a QEMU that has it open is one), by address. Opened
        read-only: an image opened for writing is watched by its opener, here the agent."""
        with self._image(source, read_only=True) as image:
            return [str(w.get("addr", "?")) for w in image.watchers_list()]

    def client(self, source: RbdSource) -> str:
        """This process's client name in the image's cluster ("client.4154"), as image locks
        name their owner."""
        cluster = self._cluster(source.config_file or self._default_conf)
        return f"client.{cluster.get_instance_id()}"

    def break_lock_of(self, source: RbdSource, client: str) -> bool:
        """Breaks the image's lock if `client` holds it (Ceph blocklists that client); whether
        it did. Only for a client known dead: an earlier agent process that was killed, whose
        lock would otherwise stand until its watch times out."""
        with self._image(source, read_only=True) as image:
            found = image.list_lockers()  # [] when unlocked
            broken = False
            for owner, cookie, _ in found["lockers"] if found else []:
                if owner == client:
                    log.warning("RBD %s: breaking the lock of %s (dead)", source.spec, client)
                    image.break_lock(owner, cookie)
                    broken = True
            return broken

    def size(self, source: RbdSource) -> int:
        with self._image(source) as image:
            return int(image.size())

    def create_snapshot(self, source: RbdSource, name: str) -> None:
        log.info("RBD %s: creating snapshot %s", source.spec, name)
        with self._image(source) as image:
            try:
                image.create_snap(name)
            except rbd.Error as e:
                raise OperationFailed(f"RBD snapshot {source.spec}@{name} failed: {e}") from e

    def remove_snapshot(self, source: RbdSource, name: str) -> None:
        """Removes a snapshot, unprotecting it first when no clone depends on it. A snapshot
        already gone (removed by someone else meanwhile too) is not an error."""
        with self._image(source) as image:
            try:
                if image.is_protected_snap(name):
                    self._unprotect(image, source, name)
                log.info("RBD %s: removing snapshot %s", source.spec, name)
                image.remove_snap(name)
            except rbd.ImageNotFound:
                return
            except rbd.Error as e:
                raise OperationFailed(f"removing {source.spec}@{name} failed: {e}") from e

    @staticmethod
    def _unprotect(image: rbd.Image, source: RbdSource, name: str) -> None:
        image.set_snap(name)
        try:
            children = list(image.list_children())
        finally:
            image.set_snap(None)
        if children:
            clones = ", ".join(f"{p}/{i}" for p, i in children)
            raise Precondition(
                f"RBD snapshot {source.spec}@{name} has clones ({clones}); "
                "flatten or remove them first",
                reason="SNAPSHOT_HAS_CLONES",
            )
        image.unprotect_snap(name)

    def rollback(
        self, source: RbdSource, name: str, progress: Callable[[float], None] | None = None
    ) -> None:
        """Rolls the image back to a snapshot. Through the rbd CLI: python3-rbd of Ceph 16 has
        no progress callback for rollback, the CLI prints one."""
        log.info("RBD %s: rolling back to %s", source.spec, name)
        conf = source.config_file or self._default_conf
        argv = ["rbd", "-c", conf, "snap", "rollback", f"{source.spec}@{name}"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        output = b""
        reported = 0
        while chunk := os.read(proc.stderr.fileno(), 4096):
            output += chunk
            if progress is not None:
                percents = printed_percentages(output)
                for percent in percents[reported:]:
                    progress(percent / 100)
                reported = len(percents)
        if proc.wait() != 0:
            message = output.decode(errors="replace").strip().splitlines()
            raise OperationFailed(
                f"rollback of {source.spec} to {name} failed: {message[-1] if message else ''}"
            )
        if progress is not None:
            progress(1.0)

    @contextmanager
    def reading_snapshot(
        self, source: RbdSource, snapshot: str, since: str | None
    ) -> Iterator[RbdSnapshotReader]:
        """The image at `snapshot`: the extents changed since the snapshot `since` (None:
        every allocated extent, the parent's included), and their data."""
        with self._image(source, read_only=True, snapshot=snapshot) as image:
            try:
                yield RbdSnapshotReader(image, since)
            except rbd.ImageNotFound as e:
                raise NotFound(f"RBD snapshot {source.spec}@{since} does not exist") from e
            except rbd.Error as e:
                raise OperationFailed(f"reading {source.spec}@{snapshot}: {e}") from e

    @contextmanager
    def creating(self, source: RbdSource, size: int) -> Iterator[RbdImageWriter]:
        """A new image (Precondition IMAGE_EXISTS when there is one of that name), written
        extent by extent and flushed. On failure the new image is removed."""
        with self._ioctx(source) as ioctx:
            try:
                rbd.RBD().create(ioctx, source.image, size, old_format=False)
            except rbd.ImageExists as e:
                raise Precondition(
                    f"RBD image {source.spec} exists already", reason="IMAGE_EXISTS"
                ) from e
            try:
                with rbd.Image(ioctx, source.image) as image:
                    yield RbdImageWriter(image)
                    image.flush()
            except BaseException:
                log.warning("RBD %s: removing the image not fully written", source.spec)
                rbd.RBD().remove(ioctx, source.image)
                raise

    @contextmanager
    def overwriting(self, source: RbdSource, size: int) -> Iterator[RbdImageWriter]:
        """The existing image zeroed (grown to `size` if smaller, never shrunk: the guest
        keeps the disk size it has), then written extent by extent and flushed, under its
        exclusive lock held throughout: librbd hands an automatic lock to whoever asks, a
        lock taken explicitly it does not, so no QEMU started meanwhile opens the image half
        written. What it held before is gone: the caller keeps a snapshot of it."""
        log.info("RBD %s: overwriting the whole image", source.spec)
        me = self._cluster(source.config_file or self._default_conf).get_instance_id()
        with self._image(source) as image:
            try:
                image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
                others = [w for w in image.watchers_list() if w.get("id") != me]
                if others:
                    raise Precondition(
                        f"RBD image {source.spec} was opened by {others[0].get('addr', '?')} "
                        "meanwhile; it was not changed",
                        reason="IMAGE_BUSY",
                    )
                if image.size() < size:
                    image.resize(size)
                image.write_zeroes(0, image.size())
                yield RbdImageWriter(image)
                image.flush()
            except rbd.Error as e:
                raise OperationFailed(f"writing {source.spec}: {e}") from e

    def rename_image(self, source: RbdSource, to: RbdSource) -> None:
        """Within one pool; IMAGE_EXISTS when `to` exists."""
        with self._ioctx(source) as ioctx:
            try:
                rbd.RBD().rename(ioctx, source.image, to.image)
            except rbd.ImageExists as e:
                raise Precondition(
                    f"RBD image {to.spec} exists already", reason="IMAGE_EXISTS"
                ) from e
            except rbd.ImageNotFound as e:
                raise NotFound(f"RBD image {source.spec} does not exist") from e
            except rbd.Error as e:
                raise OperationFailed(f"renaming RBD image {source.spec} to {to.image}: {e}") from e

    def remove_image(self, source: RbdSource) -> None:
        """Removes an image hostsnap made (a restore that did not finish); one already gone
        is not an error."""
        with self._ioctx(source) as ioctx:
            try:
                rbd.RBD().remove(ioctx, source.image)
            except rbd.ImageNotFound:
                return
            except rbd.Error as e:
                raise OperationFailed(f"removing RBD image {source.spec}: {e}") from e


class RbdSnapshotReader:
    def __init__(self, image: rbd.Image, since: str | None) -> None:
        self._image = image
        self._since = since
        self.size: int = int(image.size())

    def extents(self) -> Iterator[Extent]:
        found: list[Extent] = []

        def seen(offset: int, length: int, exists: bool) -> int:
            # Without a `since`, only what holds data is sent: a new image reads zeroes.
            if exists or self._since is not None:
                found.append(Extent(offset, length, zero=not exists))
            return 0

        self._image.diff_iterate(0, self.size, self._since, seen)
        return coalesce(sorted(found, key=lambda e: e.offset))

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._image.read(offset, length))


class RbdImageWriter:
    def __init__(self, image: rbd.Image) -> None:
        self._image = image

    def write(self, offset: int, data: bytes) -> None:
        self._image.write(data, offset)

    def zero(self, offset: int, length: int) -> None:
        self._image.write_zeroes(offset, length)
