"""Brings the whole lab up, reports on it and takes it down; every step is idempotent."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from . import ceph, domains, guest_agent, guest_image, hook, libvirtd, packages, rgw
from .paths import QCOW2_DOMAIN, RBD_DOMAIN, RBD_POOL, LabPaths
from .procs import processes_using, terminate
from .run import LabError, run

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; the lab reports the ones that matter.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

BOOT_TIMEOUT = 300.0
LAB_PROCESS_NAMES = ("qemu-system-x86_64", "ceph-mon", "ceph-osd")


@dataclass(frozen=True)
class Lab:
    """What a running lab offers to tests, the demo and the CLI."""

    paths: LabPaths
    uri: str = libvirtd.URI
    qcow2_domain: str = QCOW2_DOMAIN
    rbd_domain: str = RBD_DOMAIN
    rbd_pool: str = RBD_POOL

    @property
    def ceph_conf(self) -> Path:
        return self.paths.ceph_conf

    @property
    def qcow2_disk(self) -> Path:
        """The disk's original image (after snapshots, a layer below the active one)."""
        return self.paths.qcow2_disk

    @property
    def agent_state(self) -> Path:
        return self.paths.agent_state


def up(paths: LabPaths | None = None) -> Lab:
    paths = paths or LabPaths.from_env()
    packages.ensure_installed()
    for d in (paths.root, paths.pool, paths.logs):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    libvirtd.ensure_running(paths)
    hook.ensure_installed(paths)
    guest_image.ensure_built(paths)
    ceph_rebuilt = ceph.ensure_running(paths)
    rgw.ensure_running(paths)
    conn = libvirt.open(libvirtd.URI)
    try:
        if not domains.is_running_from(conn, QCOW2_DOMAIN, paths):
            forget_agent_state(paths)
            domains.remove(conn, QCOW2_DOMAIN)
            fresh_qcow2_disk(paths)
            domains.define_and_start(conn, paths, domains.qcow2_domain(paths))
        if ceph_rebuilt or not domains.is_running_from(conn, RBD_DOMAIN, paths):
            forget_agent_state(paths)
            domains.remove(conn, RBD_DOMAIN)
            fresh_rbd_disk(paths)
            domains.define_and_start(conn, paths, domains.rbd_domain(paths))
        wait_for_guest_agents(conn, paths, (QCOW2_DOMAIN, RBD_DOMAIN))
    finally:
        conn.close()
    return Lab(paths)


def forget_agent_state(paths: LabPaths) -> None:
    """A guest with a fresh disk makes the agent's journal and layer map describe images that
    no longer exist."""
    shutil.rmtree(paths.agent_state, ignore_errors=True)


def fresh_qcow2_disk(paths: LabPaths) -> None:
    for stale in paths.pool.glob(f"{QCOW2_DOMAIN}*"):
        stale.unlink()
    base, disk = str(paths.base_disk), str(paths.qcow2_disk)
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", base, disk])


def fresh_rbd_disk(paths: LabPaths) -> None:
    rbd = ["rbd", "-c", str(paths.ceph_conf)]
    image = f"{RBD_POOL}/{RBD_DOMAIN}"
    if RBD_DOMAIN in run([*rbd, "ls", RBD_POOL]).stdout.split():
        run([*rbd, "snap", "purge", image])
        run([*rbd, "rm", "--no-progress", image])
    run([*rbd, "import", "--no-progress", str(paths.base_disk), image], timeout=300)


def wait_for_guest_agents(
    conn: libvirt.virConnect, paths: LabPaths, names: tuple[str, ...], timeout: float = BOOT_TIMEOUT
) -> None:
    waiting = set(names)
    deadline = time.monotonic() + timeout
    while waiting:
        for name in sorted(waiting):
            dom = domains.lookup(conn, name)
            if dom is None or not dom.isActive():
                raise LabError(f"domain {name} stopped while booting:\n{console_tail(paths, name)}")
            if guest_agent.answers_ping(dom, timeout=2):
                log.info("%s answers guest-ping", name)
                waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            tails = "\n".join(f"{n}:\n{console_tail(paths, n)}" for n in sorted(waiting))
            raise LabError(f"no guest-ping answer within {timeout:.0f} s from {waiting}\n{tails}")
        if waiting:
            time.sleep(1)


def console_tail(paths: LabPaths, name: str, lines: int = 15) -> str:
    try:
        return "\n".join(paths.console_log(name).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"


def status(paths: LabPaths | None = None) -> list[tuple[str, str]]:
    """(component, state) pairs, for the CLI and the demo."""
    paths = paths or LabPaths.from_env()
    report = [("state directory", str(paths.root))]
    if not libvirtd.answers():
        return [*report, ("libvirt", f"{libvirtd.URI} does not answer")]
    report.append(("libvirt", f"{libvirtd.URI} answers"))
    healthy = ceph.is_healthy(paths)
    report.append(
        (
            "ceph",
            f"mon v2:{ceph.MON_ADDR}, pool {RBD_POOL}, conf {paths.ceph_conf}"
            if healthy
            else "not running",
        )
    )
    report.append(("radosgw (S3)", rgw.URL if rgw.answers() else "not running"))
    conn = libvirt.open(libvirtd.URI)
    try:
        for name in (QCOW2_DOMAIN, RBD_DOMAIN):
            dom = domains.lookup(conn, name)
            if dom is None or not dom.isActive():
                report.append((name, "not running"))
                continue
            disk = domains.disk_source(dom)
            agent = (
                "answers guest-ping" if guest_agent.answers_ping(dom) else "no guest-ping answer"
            )
            report.append((name, f"running, {agent}, disk {disk}"))
    finally:
        conn.close()
    return report


def down(paths: LabPaths | None = None) -> None:
    """Stops and removes everything the lab made."""
    paths = paths or LabPaths.from_env()
    if libvirtd.answers():
        conn = libvirt.open(libvirtd.URI)
        try:
            for name in (QCOW2_DOMAIN, RBD_DOMAIN):
                domains.remove(conn, name)
        finally:
            conn.close()
    # Anything left that still uses the lab's files (a guest libvirt lost track of).
    terminate(processes_using(paths.root, LAB_PROCESS_NAMES), timeout=20)
    ceph.stop(paths)
    hook.remove()
    libvirtd.stop_if_started_by_lab(paths)
    shutil.rmtree(paths.root, ignore_errors=True)


def leftover_processes(paths: LabPaths | None = None) -> list[int]:
    paths = paths or LabPaths.from_env()
    return processes_using(paths.root, LAB_PROCESS_NAMES)
