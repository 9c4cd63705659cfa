"""A one-node Ceph cluster on loopback: one monitor, one memstore OSD, auth none, pool `rbd`.

memstore keeps the OSD's objects in RAM, so a cluster whose daemons died cannot be resumed;
`ensure_running` then builds a fresh one.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from .paths import RBD_POOL, LabPaths
from .procs import alive, processes_using, terminate
from .run import LabError, run

log = logging.getLogger(__name__)

MON_ADDR = "127.0.0.1:3300"
MEMSTORE_BYTES = 4 * 1024**3
DAEMONS = ("mon.a", "osd.0")

CONF = """[global]
fsid = {fsid}
mon host = v2:{mon_addr}
mon initial members = a
# Loopback only: without a cluster address the OSD's cluster and heartbeat messengers bind
# every interface.
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = {root}/run
pid file = {root}/run/$name.pid
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}

[client]
# QEMU opens RBD disks as the libvirt-qemu user, which cannot write under {root}.
log file = /dev/null
admin socket =
"""


def render_conf(root: Path, fsid: str, memstore_bytes: int = MEMSTORE_BYTES) -> str:
    return CONF.format(root=root, fsid=fsid, mon_addr=MON_ADDR, memstore_bytes=memstore_bytes)


def ceph(paths: LabPaths, *args: str, timeout: float = 60.0) -> str:
    return run(["ceph", "-c", str(paths.ceph_conf), *args], timeout=timeout).stdout


def daemon_pid(paths: LabPaths, name: str) -> int | None:
    """The daemon's pid when its pid file names a live process."""
    try:
        pid = int((paths.ceph / "run" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def is_healthy(paths: LabPaths) -> bool:
    if not has_current_conf(paths) or any(daemon_pid(paths, d) is None for d in DAEMONS):
        return False
    try:
        run(["rbd", "-c", str(paths.ceph_conf), "ls", RBD_POOL], timeout=15)
    except LabError:
        return False
    return True


def has_current_conf(paths: LabPaths) -> bool:
    """The cluster was made with this version of the lab's configuration (else it is rebuilt)."""
    try:
        written = paths.ceph_conf.read_text()
    except OSError:
        return False
    fsid = next(
        (
            line.split("=", 1)[1].strip()
            for line in written.splitlines()
            if line.startswith("fsid =")
        ),
        "",
    )
    return written == render_conf(paths.ceph, fsid)


def ensure_running(paths: LabPaths) -> bool:
    """Makes sure the cluster answers; returns True when it had to be (re)built."""
    if is_healthy(paths):
        return False
    stop(paths)
    create(paths)
    return True


def create(paths: LabPaths) -> None:
    log.info("bringing up a one-node Ceph cluster at %s", MON_ADDR)
    root = paths.ceph
    for sub in ("run", "log", "mon", "osd/ceph-0"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    fsid = str(uuid.uuid4())
    paths.ceph_conf.write_text(render_conf(root, fsid))
    paths.ceph_conf.chmod(0o644)
    conf = ["-c", str(paths.ceph_conf)]
    monmap = root / "monmap"
    run(["monmaptool", "--create", "--addv", "a", f"[v2:{MON_ADDR}]", "--fsid", fsid, str(monmap)])
    run(["ceph-mon", *conf, "--mkfs", "-i", "a", "--monmap", str(monmap)])
    run(["ceph-mon", *conf, "-i", "a"])
    osd_id = ceph(paths, "osd", "create").strip()
    if osd_id != "0":
        raise LabError(f"expected the new cluster's first OSD to get id 0, got {osd_id!r}")
    run(["ceph-osd", *conf, "-i", "0", "--mkfs"], timeout=120)
    ceph(paths, "osd", "crush", "add", "osd.0", "1", "host=localhost")
    run(["ceph-osd", *conf, "-i", "0"])
    ceph(paths, "osd", "pool", "create", RBD_POOL, "8")
    ceph(paths, "osd", "pool", "application", "enable", RBD_POOL, "rbd")
    # The pool serves I/O once its placement groups have peered on the new OSD.
    run(["rbd", *conf, "ls", RBD_POOL], timeout=120)


def stop(paths: LabPaths, timeout: float = 20.0) -> None:
    """Stops the lab's daemons (by pid file and by their config path) and removes the cluster."""
    pids = {pid for d in DAEMONS if (pid := daemon_pid(paths, d)) is not None}
    pids |= set(processes_using(paths.ceph_conf, ("ceph-mon", "ceph-osd", "radosgw")))
    terminate(pids, timeout)
    shutil.rmtree(paths.ceph, ignore_errors=True)
