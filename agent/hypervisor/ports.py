"""What the operations need of the outside world, as Protocols: the host's libvirt, a guest's
agent, Ceph RBD. The adapters of this package satisfy them (LibvirtHost, GuestAgent, CephRbd);
unit tests satisfy them with fakes. Only plain types cross: no libvirt or rbd object."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import IO, Protocol

from agent.hypervisor.extents import Extent
from agent.hypervisor.restic import Snapshot as RepositorySnapshot
from agent.hypervisor.restic import Uploaded
from agent.model import DomainState, RbdSnap, RbdSource

# (monotonic time taken before the call, {domain: {disk: counters}})
BlockCounters = tuple[float, dict[str, dict[str, dict[str, int]]]]


class Host(Protocol):
    """The libvirt calls the operations make (LibvirtHost)."""

    def versions(self) -> tuple[str, str]: ...

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]: ...

    def block_counters(self) -> BlockCounters: ...

    def exists(self, name: str) -> bool: ...

    def state(self, name: str) -> tuple[DomainState, int]: ...

    def shut_off_cleanly(self, name: str) -> bool: ...

    def xml(self, name: str, *, inactive: bool = False) -> str: ...

    def define(self, xml: str) -> None: ...

    def stop(self, name: str, timeout: float) -> bool: ...

    def suspend(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def snapshot_external(
        self, name: str, overlays: dict[str, str], targets: list[str]
    ) -> None: ...

    def block_job(self, name: str, target: str) -> dict[str, int] | None: ...

    def block_commit(
        self,
        name: str,
        target: str,
        top: str | None,
        base: str | None,
        *,
        active: bool,
        bandwidth_mib: int = 0,
    ) -> None: ...

    def block_pull(self, name: str, target: str, *, bandwidth_mib: int = 0) -> None: ...

    def block_job_set_speed(self, name: str, target: str, bandwidth_mib: int) -> None: ...

    def block_job_pivot(self, name: str, target: str) -> None: ...

    def block_job_abort(self, name: str, target: str) -> None: ...


class Guest(Protocol):
    """A domain's qemu-guest-agent (GuestAgent)."""

    def ping(self) -> None: ...

    def freeze_status(self) -> str: ...

    def freeze(self) -> int: ...

    def thaw(self) -> int: ...


# A domain's guest agent by the domain's name (NotFound for an unknown domain).
GuestAgents = Callable[[str], Guest]


class Rbd(Protocol):
    """The Ceph RBD calls the operations make (CephRbd)."""

    def client_version(self) -> str: ...

    def close(self) -> None: ...

    def snapshots(self, source: RbdSource) -> list[RbdSnap]: ...

    def parents(self, source: RbdSource) -> list[str]: ...

    def flatten(self, source: RbdSource, progress: Callable[[float], None]) -> None: ...

    def watchers(self, source: RbdSource) -> list[str]: ...

    def size(self, source: RbdSource) -> int: ...

    def client(self, source: RbdSource) -> str:
        """This process's Ceph client name, as image locks name their owner."""

    def break_lock_of(self, source: RbdSource, client: str) -> bool:
        """Breaks the image's lock if the (dead) `client` holds it; whether it did."""

    def create_snapshot(self, source: RbdSource, name: str) -> None: ...

    def remove_snapshot(self, source: RbdSource, name: str) -> None: ...

    def rollback(
        self, source: RbdSource, name: str, progress: Callable[[float], None] | None = None
    ) -> None: ...


class CephCluster(Protocol):
    """Whether a Ceph cluster answers (CephRbd), for `hostsnap doctor`."""

    def connect(self, conf: str) -> None: ...


class ExtentReader(Protocol):
    """An image as a backup reads it: its size, the extents to send, their data."""

    @property
    def size(self) -> int: ...

    def extents(self) -> Iterator[Extent]: ...

    def read(self, offset: int, length: int) -> bytes: ...


class ExtentWriter(Protocol):
    """A new image as a restore writes it."""

    def write(self, offset: int, data: bytes) -> None: ...

    def zero(self, offset: int, length: int) -> None: ...


class Images(Protocol):
    """Images read and written extent by extent (ImageIO: librbd, qemu-nbd)."""

    def reading_rbd(
        self, source: RbdSource, snapshot: str, since: str | None
    ) -> AbstractContextManager[ExtentReader]: ...

    def reading_file(
        self, path: str, since_depth: int | None
    ) -> AbstractContextManager[ExtentReader]: ...

    def creating_rbd(
        self, source: RbdSource, size: int
    ) -> AbstractContextManager[ExtentWriter]: ...

    def overwriting_rbd(self, source: RbdSource, size: int) -> AbstractContextManager[ExtentWriter]:
        """The existing image resized to `size`, zeroed, then written."""

    def creating_file(self, path: str, size: int) -> AbstractContextManager[ExtentWriter]: ...

    def remove_rbd(self, source: RbdSource) -> None: ...

    def remove_file(self, path: str) -> None: ...

    def publish_rbd(self, staged: RbdSource, final: RbdSource) -> None:
        """Renames `staged` to `final`; IMAGE_EXISTS when `final` exists (it is kept),
        NotFound when `staged` does not."""

    def publish_file(self, staged: str, final: str) -> None:
        """Gives `staged` the name `final` and drops the staged name; IMAGE_EXISTS when
        `final` exists (it is kept). Publishing again after a kill midway completes it."""


class BackupRepository(Protocol):
    """A backup target's repository (restic.ResticRepository)."""

    @property
    def repository(self) -> str: ...

    def exists(self) -> bool: ...

    def present(self) -> bool: ...

    def free_bytes(self) -> int | None: ...

    def snapshots(self, tags: Sequence[str] = ()) -> Sequence[RepositorySnapshot]: ...

    def backup(
        self, filename: str, tags: Sequence[str], host: str, produce: Callable[[IO[bytes]], None]
    ) -> Uploaded: ...

    def dump(self, snapshot_id: str, filename: str) -> AbstractContextManager[IO[bytes]]: ...

    def forget(self, snapshot_ids: Sequence[str], prune: bool = True) -> None: ...

    def prune(self) -> None: ...

    def unlock(self) -> None: ...


# Seconds as a float: time.monotonic for deadlines, time.time for the wall clock.
Clock = Callable[[], float]
# Waits the seconds given: time.sleep, or a test's faster wait.
Sleep = Callable[[float], None]
