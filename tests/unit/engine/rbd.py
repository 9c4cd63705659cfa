"""A Ceph RBD that keeps its images in memory: each image's data as the markers written into
it (images.py's markers), its snapshots (copies of that data), its clone parent. Behaves as
agent/hypervisor/ceph_rbd.CephRbd does: an unknown image is NotFound, a snapshot that exists
already fails, removing one that is gone is no error."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.errors import NotFound, OperationFailed, Precondition
from agent.model import RbdSnap, RbdSource
from tests.unit.engine.images import SIZE


@dataclass
class FakeImage:
    size: int = SIZE
    data: dict[int, int] = field(default_factory=dict)  # offset (in markers) -> marker
    snapshots: dict[str, tuple[int, dict[int, int]]] = field(default_factory=dict)
    parent: str | None = None  # "pool/image@snap" of a clone
    watchers: list[str] = field(default_factory=list)


class FakeRbd:
    def __init__(self, clock: Callable[[], float] = lambda: 1_700_000_000.0) -> None:
        self.images: dict[str, FakeImage] = {}
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self._clock = clock
        # A call that fails: "create_snapshot" -> the error it raises (once).
        self.failures: dict[str, Exception] = {}

    def add(self, spec: str, parent: str | None = None) -> FakeImage:
        image = FakeImage(parent=parent)
        self.images[spec] = image
        return image

    def _image(self, source: RbdSource) -> FakeImage:
        image = self.images.get(source.spec)
        if image is None:
            raise NotFound(f"RBD image {source.spec} does not exist")
        return image

    def _call(self, call: str) -> None:
        self.calls.append(call)
        failure = self.failures.pop(call.partition("(")[0], None)
        if failure is not None:
            raise failure

    def client_version(self) -> str:
        return "17.2.0 (fake)"

    def close(self) -> None:
        pass

    def snapshots(self, source: RbdSource) -> list[RbdSnap]:
        image = self._image(source)
        return [
            RbdSnap(name, snap_id, self._clock(), False)
            for name, (snap_id, _) in image.snapshots.items()
        ]

    def names(self, spec: str) -> list[str]:
        return list(self.images[spec].snapshots)

    def parents(self, source: RbdSource) -> list[str]:
        found = []
        parent = self._image(source).parent
        while parent is not None:
            found.append(parent)
            parent = self.images[parent.partition("@")[0]].parent
        return found

    def flatten(self, source: RbdSource, progress: Callable[[float], None]) -> None:
        self._call(f"flatten({source.spec})")
        image = self._image(source)
        if image.parent is None:
            raise Precondition(f"RBD image {source.spec} is not a clone", reason="NOT_A_CLONE")
        spec, _, snap = image.parent.partition("@")
        image.data = {**self.images[spec].snapshots[snap][1], **image.data}
        image.parent = None
        progress(1.0)

    def watchers(self, source: RbdSource) -> list[str]:
        return list(self._image(source).watchers)

    def size(self, source: RbdSource) -> int:
        return self._image(source).size

    def client(self, source: RbdSource) -> str:
        return "client.1"

    def break_lock_of(self, source: RbdSource, client: str) -> bool:
        return False  # the fake's images take no locks

    def create_snapshot(self, source: RbdSource, name: str) -> None:
        self._call(f"create_snapshot({source.spec}@{name})")
        image = self._image(source)
        if name in image.snapshots:
            raise OperationFailed(f"RBD snapshot {source.spec}@{name} failed: exists")
        image.snapshots[name] = (next(self._ids), dict(image.data))

    def remove_snapshot(self, source: RbdSource, name: str) -> None:
        self._call(f"remove_snapshot({source.spec}@{name})")
        self._image(source).snapshots.pop(name, None)

    def rollback(
        self, source: RbdSource, name: str, progress: Callable[[float], None] | None = None
    ) -> None:
        self._call(f"rollback({source.spec}@{name})")
        image = self._image(source)
        if name not in image.snapshots:
            raise OperationFailed(f"rollback of {source.spec} to {name} failed: no snapshot")
        image.data = dict(image.snapshots[name][1])
        if progress is not None:
            progress(1.0)
