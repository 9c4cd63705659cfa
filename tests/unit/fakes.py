"""Fakes of the ports (agent/hypervisor/ports.py) for unit tests, checked by mypy against the
Protocols: a fake whose methods drift from its port is a type error here or where it is used.

UnusedHost, UnusedRbd and UnusedGuest fail any call, as AssertionError naming it: a test
subclasses them and overrides what the code under test may call."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.hypervisor import ports
from agent.model import DomainState, RbdSnap, RbdSource


def _unexpected(call: str) -> AssertionError:
    return AssertionError(f"unexpected call: {call}")


class UnusedHost:
    def versions(self) -> tuple[str, str]:
        raise _unexpected("host.versions")

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        raise _unexpected("host.list_domains")

    def block_counters(self) -> ports.BlockCounters:
        raise _unexpected("host.block_counters")

    def exists(self, name: str) -> bool:
        raise _unexpected(f"host.exists({name})")

    def state(self, name: str) -> tuple[DomainState, int]:
        raise _unexpected(f"host.state({name})")

    def shut_off_cleanly(self, name: str) -> bool:
        raise _unexpected(f"host.shut_off_cleanly({name})")

    def xml(self, name: str, *, inactive: bool = False) -> str:
        raise _unexpected(f"host.xml({name})")

    def define(self, xml: str) -> None:
        raise _unexpected("host.define")

    def stop(self, name: str, timeout: float) -> bool:
        raise _unexpected(f"host.stop({name})")

    def suspend(self, name: str) -> None:
        raise _unexpected(f"host.suspend({name})")

    def resume(self, name: str) -> None:
        raise _unexpected(f"host.resume({name})")

    def snapshot_external(self, name: str, overlays: dict[str, str], targets: list[str]) -> None:
        raise _unexpected(f"host.snapshot_external({name})")

    def block_job(self, name: str, target: str) -> dict[str, int] | None:
        raise _unexpected(f"host.block_job({name}, {target})")

    def block_commit(
        self,
        name: str,
        target: str,
        top: str | None,
        base: str | None,
        *,
        active: bool,
        bandwidth_mib: int = 0,
    ) -> None:
        raise _unexpected(f"host.block_commit({name}, {target})")

    def block_pull(self, name: str, target: str, *, bandwidth_mib: int = 0) -> None:
        raise _unexpected(f"host.block_pull({name}, {target})")

    def block_job_set_speed(self, name: str, target: str, bandwidth_mib: int) -> None:
        raise _unexpected(f"host.block_job_set_speed({name}, {target})")

    def block_job_pivot(self, name: str, target: str) -> None:
        raise _unexpected(f"host.block_job_pivot({name}, {target})")

    def block_job_abort(self, name: str, target: str) -> None:
        raise _unexpected(f"host.block_job_abort({name}, {target})")


class UnusedRbd:
    """Closing is allowed (Services.close does it)."""

    def client_version(self) -> str:
        raise _unexpected("rbd.client_version")

    def close(self) -> None:
        pass

    def snapshots(self, source: RbdSource) -> list[RbdSnap]:
        raise _unexpected(f"rbd.snapshots({source.spec})")

    def parents(self, source: RbdSource) -> list[str]:
        raise _unexpected(f"rbd.parents({source.spec})")

    def flatten(self, source: RbdSource, progress: Callable[[float], None]) -> None:
        raise _unexpected(f"rbd.flatten({source.spec})")

    def watchers(self, source: RbdSource) -> list[str]:
        raise _unexpected(f"rbd.watchers({source.spec})")

    def size(self, source: RbdSource) -> int:
        raise _unexpected(f"rbd.size({source.spec})")

    def client(self, source: RbdSource) -> str:
        raise _unexpected(f"rbd.client({source.spec})")

    def break_lock_of(self, source: RbdSource, client: str) -> bool:
        raise _unexpected(f"rbd.break_lock_of({source.spec}, {client})")

    def create_snapshot(self, source: RbdSource, name: str) -> None:
        raise _unexpected(f"rbd.create_snapshot({source.spec}, {name})")

    def remove_snapshot(self, source: RbdSource, name: str) -> None:
        raise _unexpected(f"rbd.remove_snapshot({source.spec}, {name})")

    def rollback(
        self, source: RbdSource, name: str, progress: Callable[[float], None] | None = None
    ) -> None:
        raise _unexpected(f"rbd.rollback({source.spec}, {name})")


class UnusedGuest:
    def ping(self) -> None:
        raise _unexpected("guest.ping")

    def freeze_status(self) -> str:
        raise _unexpected("guest.freeze_status")

    def freeze(self) -> int:
        raise _unexpected("guest.freeze")

    def thaw(self) -> int:
        raise _unexpected("guest.thaw")


class FakeGuest:
    """A guest agent that freezes and thaws at once, or stays frozen (`stuck_frozen`)."""

    def __init__(self, stuck_frozen: bool = False) -> None:
        self.frozen = False
        self.stuck_frozen = stuck_frozen
        self.thaws = 0
        self.thawed = threading.Event()

    def ping(self) -> None:
        pass

    def freeze(self) -> int:
        self.frozen = True
        return 1

    def thaw(self) -> int:
        self.thaws += 1
        if not self.stuck_frozen:
            self.frozen = False
            self.thawed.set()
        return 1

    def freeze_status(self) -> str:
        return "frozen" if self.frozen else "thawed"


# Each fake is its port: mypy fails here when one drifts from its Protocol.
_host: ports.Host = UnusedHost()
_rbd: ports.Rbd = UnusedRbd()
_guest: ports.Guest = FakeGuest()
_unused_guest: ports.Guest = UnusedGuest()
