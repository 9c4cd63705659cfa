"""The narrow libvirt adapter: only the calls the operations need, with libvirt's errors
turned into the agent's."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from xml.sax.saxutils import quoteattr

import libvirt

from agent.errors import NotFound, Unavailable
from agent.hypervisor.libvirt_errors import translated
from agent.model import DomainState

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; the agent reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as e:
        raise translated(what, e) from e


class LibvirtHost:
    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or self._conn.isAlive() != 1:
                try:
                    self._conn = libvirt.open(self._uri)
                except libvirt.libvirtError as e:
                    raise Unavailable(f"libvirt at {self._uri} cannot be reached: {e}") from e
            return self._conn

    def versions(self) -> tuple[str, str]:
        """(libvirt, hypervisor) versions as "major.minor.micro"."""
        with _translated("libvirt versions"):
            conn = self._connection()
            return _version(conn.getLibVersion()), _version(conn.getVersion())

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        """(name, uuid, state) of the host's domains, sorted by name."""
        flags = 0 if include_inactive else libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        with _translated("listing domains"):
            found = [
                (d.name(), d.UUIDString(), _STATES.get(d.state()[0], DomainState.UNKNOWN))
                for d in self._connection().listAllDomains(flags)
            ]
        return sorted(found)

    def block_counters(self) -> tuple[float, dict[str, dict[str, dict[str, int]]]]:
        """One bulk statistics call for every running domain, never waiting on a domain that
        is busy (NOWAIT): (monotonic time taken *before* the call, {domain: {disk: counters}}).
        Counters are libvirt's cumulative ones: rd/wr/fl.reqs, rd/wr.bytes, rd/wr/fl.times."""
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | getattr(
            libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0
        )
        taken_at = time.monotonic()
        with _translated("domain statistics"):
            records = self._connection().getAllDomainStats(libvirt.VIR_DOMAIN_STATS_BLOCK, flags)
        found: dict[str, dict[str, dict[str, int]]] = {}
        for dom, stats in records:
            disks: dict[str, dict[str, int]] = {}
            for i in range(int(stats.get("block.count", 0))):
                prefix = f"block.{i}."
                name = stats.get(prefix + "name")
                if name is None or name in disks:
                    continue  # backing-chain entries repeat the disk's name
                counters = {
                    key.removeprefix(prefix): int(value)
                    for key, value in stats.items()
                    if key.startswith(prefix) and key.endswith((".reqs", ".bytes", ".times"))
                }
                if counters:  # a busy domain (NOWAIT) may answer without them
                    disks[name] = counters
            found[dom.name()] = disks
        return taken_at, found

    def domain(self, name: str) -> libvirt.virDomain:
        with _translated(f"domain {name!r}"):
            return self._connection().lookupByName(name)

    def domain_on_own_connection(self, name: str) -> libvirt.virDomain:
        """The domain on a connection of its own (closed when the domain object goes).

        A guest-agent call can wait many seconds for a guest that does not answer, and
        libvirt's client holds up other calls on the same connection meanwhile."""
        try:
            conn = libvirt.open(self._uri)
        except libvirt.libvirtError as e:
            raise Unavailable(f"libvirt at {self._uri} cannot be reached: {e}") from e
        with _translated(f"domain {name!r}"):
            return conn.lookupByName(name)

    def exists(self, name: str) -> bool:
        try:
            self.domain(name)
        except NotFound:
            return False
        return True

    def state(self, name: str) -> tuple[DomainState, int]:
        """The domain's state and libvirt's reason code for it."""
        with _translated(f"state of {name!r}"):
            state, reason = self.domain(name).state()
        return _STATES.get(state, DomainState.UNKNOWN), reason

    def shut_off_cleanly(self, name: str) -> bool:
        state, reason = self.state(name)
        return state == DomainState.SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN

    def xml(self, name: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with _translated(f"XML of {name!r}"):
            return str(self.domain(name).XMLDesc(flags))

    def define(self, xml: str) -> None:
        with _translated("defining a domain"):
            self._connection().defineXML(xml)

    def stop(self, name: str, timeout: float) -> bool:
        """Shuts the domain down (ACPI), destroying it after `timeout` seconds; True when it
        shut down cleanly."""
        dom = self.domain(name)
        with _translated(f"stopping {name!r}"):
            if not dom.isActive():
                return True
            log.info("domain %s: shutting down (destroyed after %.0f s)", name, timeout)
            with contextlib.suppress(libvirt.libvirtError):  # no ACPI: the deadline decides
                dom.shutdown()
            deadline = time.monotonic() + timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.5)
            if not dom.isActive():
                return True
            log.warning("domain %s: did not shut down in %.0f s; destroying it", name, timeout)
            dom.destroy()
            return False

    def suspend(self, name: str) -> None:
        with _translated(f"suspending {name!r}"):
            self.domain(name).suspend()

    def resume(self, name: str) -> None:
        with _translated(f"resuming {name!r}"):
            self.domain(name).resume()

    def snapshot_external(self, name: str, overlays: dict[str, str], targets: list[str]) -> None:
        """One atomic disk-only external snapshot: each target in `overlays` switches to its
        pre-created overlay (REUSE_EXT); the other targets are left alone."""
        disks = "".join(
            f"<disk name={quoteattr(t)} snapshot='external' type='file'>"
            f"<source file={quoteattr(overlays[t])}/></disk>"
            if t in overlays
            else f"<disk name={quoteattr(t)} snapshot='no'/>"
            for t in targets
        )
        xml = f"<domainsnapshot><disks>{disks}</disks></domainsnapshot>"
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
        )
        log.info("domain %s: external snapshot of %s", name, ", ".join(sorted(overlays)))
        with _translated(f"external snapshot of {name!r}"):
            self.domain(name).snapshotCreateXML(xml, flags)

    def block_job(self, name: str, target: str) -> dict[str, int] | None:
        """The block job running on a disk ({type, cur, end, bandwidth}) or None."""
        with _translated(f"block job of {name}/{target}"):
            info = self.domain(name).blockJobInfo(target, 0)
        return dict(info) if info else None

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
        """Commits `top` (None: the active image) into `base` (None: the bottom of the chain,
        which may be a network image), at most `bandwidth_mib` MiB/s (0: unlimited)."""
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE if active else 0
        log.info("domain %s disk %s: block commit %s into %s", name, target, top, base)
        with _translated(f"block commit on {name}/{target}"):
            self.domain(name).blockCommit(target, base, top, bandwidth_mib, flags)

    def block_pull(self, name: str, target: str, *, bandwidth_mib: int = 0) -> None:
        """Copies every backing layer's data into the active image (it then has no backing)."""
        log.info("domain %s disk %s: block pull of the whole chain", name, target)
        with _translated(f"block pull on {name}/{target}"):
            self.domain(name).blockRebase(target, None, bandwidth_mib, 0)

    def block_job_set_speed(self, name: str, target: str, bandwidth_mib: int) -> None:
        """Changes a running block job's limit (MiB/s; 0: unlimited)."""
        with _translated(f"block job speed on {name}/{target}"):
            self.domain(name).blockJobSetSpeed(target, bandwidth_mib, 0)

    def block_job_pivot(self, name: str, target: str) -> None:
        with _translated(f"pivot on {name}/{target}"):
            self.domain(name).blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)

    def block_job_abort(self, name: str, target: str) -> None:
        with _translated(f"abort of the block job on {name}/{target}"):
            self.domain(name).blockJobAbort(target, 0)
