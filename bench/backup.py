"""Backups to secondary storage against the raw tools, same run, same target directory:

- incremental: after 64 MiB changed in a 4 GiB RBD image holding 1 GiB, the bytes hostsnap's
  backup read from Ceph (the OSD's `op_r_out_bytes`) over the bytes changed (goal <= 1.1), and
  its time against CloudStack's way, `qemu-img convert -O qcow2 rbd:pool/img@snap` into the
  target (goal: 10x faster);
- full: throughput (allocated bytes over wall time) of hostsnap's first backup against
  `rbd export img@snap - | zstd -1 > file` (goal >= 0.8x);
- restore: throughput of restoring the chain into a new RBD image against `rbd import` of the
  same snapshot's raw export (goal >= 0.8x); the restored image must equal the snapshot;
- steady: ten incrementals of 8 MiB changed each; what the repository grew by over the same
  changed data compressed by `zstd -1` (goal <= 1.2).

hostsnap's times are whole jobs (plan, upload, read-back of the stream and its checksum, the
marker), also reported per phase. The image's data is half random, half repeated text, so it
compresses about as a guest disk does. The domain that owns the image is defined, not
started: a shut-off domain's snapshot is the image's RBD snapshot, nothing else.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt
import rados
import rbd

from agent.backups import catalog, targets
from agent.config import AgentConfig
from agent.hypervisor.restic import ResticRepository
from agent.model import Quiesce, SnapshotRequest
from agent.operations import backup, restore, snapshot
from agent.operations.services import Services
from agent.wiring import open_services, repository
from bench.report import write_report
from hostsnap_lab import domains
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.ceph import MON_ADDR
from hostsnap_lab.libvirtd import URI
from hostsnap_lab.paths import RBD_POOL
from hostsnap_lab.run import run

NAME = "bench-backup"
IMAGE = f"{RBD_POOL}/{NAME}"
RESTORED = f"{RBD_POOL}/{NAME}-restored"
ANCHOR_RESTORED = f"{RBD_POOL}/{NAME}-imported"
TARGET = "bench"
MIB = 1024 * 1024
IMAGE_BYTES = 4 * 1024 * MIB
DATA_CHUNK = 4 * MIB
DATA_CHUNKS = 256  # 1 GiB, one 4 MiB chunk every 16 MiB
CHANGE_CHUNK = 256 * 1024
CHANGED_BYTES = 64 * MIB
STEADY_BYTES = 8 * MIB
STEADY_BACKUPS = 10
TIMEOUT = 1800.0


def content(size: int, rng: random.Random) -> bytes:
    """Half random, half a repeated line: compresses to about half, as guest data does."""
    text = b"2026-12-04T06:00:00 hostsnap bench line of a log that repeats\n"
    half = size // 2
    return rng.randbytes(half) + (text * (half // len(text) + 1))[:half]


def osd_read_bytes(lab: lab_stack.Lab) -> int:
    out = run(["ceph", "-c", str(lab.ceph_conf), "tell", "osd.0", "perf", "dump"]).stdout
    return int(json.loads(out)["osd"]["op_r_out_bytes"])


STARTED = time.monotonic()


def say(what: str) -> None:
    print(f"  [{time.monotonic() - STARTED:7.1f} s] {what}", flush=True)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


def shell(command: str) -> float:
    seconds, _ = timed(lambda: run(["sh", "-c", command], timeout=TIMEOUT))
    return float(seconds)


def du_bytes(path: Path) -> int:
    return int(run(["du", "-sb", str(path)]).stdout.split()[0])


def wait_for_room(lab: lab_stack.Lab, timeout: float = 300.0) -> None:
    """The lab's one in-memory OSD (4 GiB) frees what an earlier run removed in the
    background; writes into a full pool wait instead of failing, which would time the wait."""
    deadline = time.monotonic() + timeout
    while True:
        out = run(["ceph", "-c", str(lab.ceph_conf), "health", "--format", "json"]).stdout
        checks = set(json.loads(out).get("checks", {}))
        if not checks & {"OSD_FULL", "OSD_NEARFULL", "POOL_FULL", "POOL_NEARFULL"}:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench backup: the lab's Ceph stays full ({sorted(checks)})")
        time.sleep(5)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Volume:
    """The benchmark's image, written through librbd."""

    image: rbd.Image
    rng: random.Random

    def fill(self) -> int:
        for n in range(DATA_CHUNKS):
            self.image.write(content(DATA_CHUNK, self.rng), n * (IMAGE_BYTES // DATA_CHUNKS))
        return DATA_CHUNK * DATA_CHUNKS

    def change(self, size: int) -> bytes:
        """Overwrites `size` bytes in distinct chunks inside the written data; returns them."""
        slots = [
            n * (IMAGE_BYTES // DATA_CHUNKS) + k * CHANGE_CHUNK
            for n in range(DATA_CHUNKS)
            for k in range(DATA_CHUNK // CHANGE_CHUNK)
        ]
        written = []
        for offset in self.rng.sample(slots, size // CHANGE_CHUNK):
            data = content(CHANGE_CHUNK, self.rng)
            self.image.write(data, offset)
            written.append(data)
        self.image.flush()
        return b"".join(written)


@contextmanager
def bench_volume(lab: lab_stack.Lab) -> Iterator[Volume]:
    """`rbd/bench-backup` owned by the shut-off domain `bench-backup`; both removed after,
    with the images the benchmark restored."""
    conn = libvirt.open(URI)
    cluster = rados.Rados(conffile=str(lab.ceph_conf))
    cluster.connect()
    ioctx = cluster.open_ioctx(RBD_POOL)

    def remove() -> None:
        domains.remove(conn, NAME)
        for spec in (IMAGE, RESTORED, ANCHOR_RESTORED):
            name = spec.split("/", 1)[1]
            if name in rbd.RBD().list(ioctx):
                run(["rbd", "-c", str(lab.ceph_conf), "snap", "purge", "--no-progress", spec])
                rbd.RBD().remove(ioctx, name)

    remove()
    host, port = MON_ADDR.split(":")
    disk = (
        f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        f"<source protocol='rbd' name={quoteattr(IMAGE)}>"
        f"<host name='{host}' port='{port}'/><config file={quoteattr(str(lab.ceph_conf))}/>"
        f"</source><target dev='vda' bus='virtio'/></disk>"
    )
    try:
        rbd.RBD().create(ioctx, NAME, IMAGE_BYTES, old_format=False)
        conn.defineXML(domains.domain_xml(lab.paths, domains.LabDomain(NAME, disk)))
        with rbd.Image(ioctx, NAME) as image:
            yield Volume(image, random.Random(17))
    finally:
        remove()
        ioctx.close()
        cluster.shutdown()
        conn.close()


def take(svc: Services) -> str:
    made = snapshot.create(svc, SnapshotRequest(NAME, quiesce=Quiesce.NONE))
    return made.disks[0].snapshot_id


def phases(svc: Services, job_id: str) -> dict[str, float]:
    job = svc.journal.get(job_id)
    at = {step.name: step.at for step in job.steps}
    marks = [
        ("plan", job.created, at["plan"]),
        ("upload", at["plan"], at["uploaded"]),
        ("read_back_and_marker", at["uploaded"], at["verified"]),
        ("end", at["verified"], job.updated),
    ]
    return {f"{name}_s": round(end - start, 3) for name, start, end in marks}


def backed_up(svc: Services, lab: lab_stack.Lab, snapshot_id: str) -> dict[str, Any]:
    drop_caches()
    before = osd_read_bytes(lab)
    seconds, made = timed(lambda: backup.backup(svc, backup.BackupRequest(snapshot_id, TARGET)))
    return {
        "seconds": round(seconds, 3),
        "ceph_read_bytes": osd_read_bytes(lab) - before,
        "data_bytes": made.backup.data_bytes,
        "stored_bytes": made.backup.stored_bytes,
        "full": made.backup.full,
        "id": made.backup.id,
        "phases": phases(svc, made.job_id),
    }


def zstd_bytes(data: bytes) -> int:
    done = subprocess.run(["zstd", "-1", "-c"], input=data, capture_output=True, check=True)
    return len(done.stdout)


def identical(lab: lab_stack.Lab, first: str, second: str) -> bool:
    spec = f":conf={lab.ceph_conf}"
    done = subprocess.run(
        ["qemu-img", "compare", "-U", f"rbd:{first}{spec}", f"rbd:{second}{spec}"],
        capture_output=True,
        timeout=TIMEOUT,
    )
    return done.returncode == 0


def restic_read_seconds(repo: ResticRepository, backup_id: str) -> float:
    """What restic alone takes to give a restore its chain's streams (read and dropped)."""
    links = catalog.chain(catalog.backups(repo), backup_id)
    drop_caches()
    started = time.monotonic()
    for link in links:
        with repo.dump(link.stream, catalog.stream_path(link.id)) as source:
            while source.read(4 * MIB):
                pass
    return time.monotonic() - started


def restic_start_seconds(repo: ResticRepository) -> float:
    """One restic run that only opens the repository (its key derivation, mostly): the
    median of three."""
    runs = sorted(timed(repo.exists)[0] for _ in range(3))
    return runs[1]


def measure(
    lab: lab_stack.Lab, svc: Services, repo: ResticRepository, volume: Volume, target: Path
) -> dict[str, Any]:
    rbd_cli = f"rbd -c {lab.ceph_conf}"
    wait_for_room(lab)
    say("writing 1 GiB into the 4 GiB image")
    allocated = volume.fill()
    first = take(svc)
    say("full backup")
    full = backed_up(svc, lab, first)
    drop_caches()
    export = target / "export.raw.zst"
    say("rbd export | zstd -1")
    full_anchor = shell(
        f"{rbd_cli} export --no-progress {IMAGE}@hostsnap-{first} - | zstd -1 -q > {export}"
    )
    full_anchor_bytes = export.stat().st_size
    export.unlink()

    changed = volume.change(CHANGED_BYTES)
    second = take(svc)
    say("incremental backup")
    incremental = backed_up(svc, lab, second)
    drop_caches()
    before = osd_read_bytes(lab)
    converted = target / "cloudstack.qcow2"
    say("qemu-img convert -O qcow2")
    incremental_anchor = shell(
        f"qemu-img convert -O qcow2 'rbd:{IMAGE}@hostsnap-{second}:conf={lab.ceph_conf}' "
        f"{converted}"
    )
    anchor_read = osd_read_bytes(lab) - before
    converted.unlink()
    # The first snapshot's copies of the objects changed since (whole 4 MiB objects in the
    # lab's in-memory OSD) make room for the restore; the backups no longer need it.
    run([*rbd_cli.split(), "snap", "rm", "--no-progress", f"{IMAGE}@hostsnap-{first}"])

    wait_for_room(lab)
    drop_caches()
    say("restore")
    restore_s, restored = timed(
        lambda: restore.restore(svc, restore.RestoreRequest(incremental["id"], TARGET, RESTORED))
    )
    say("restic dump of the restore's streams")
    restic_read_s = restic_read_seconds(repo, incremental["id"])
    say("comparing the restored image")
    restored_equal = identical(lab, f"{IMAGE}@hostsnap-{second}", RESTORED)
    run(["rbd", "-c", str(lab.ceph_conf), "rm", "--no-progress", RESTORED])
    raw = target / "export.raw"
    say("rbd export to a raw file, rbd import")
    run(
        ["sh", "-c", f"{rbd_cli} export --no-progress {IMAGE}@hostsnap-{second} {raw}"],
        timeout=TIMEOUT,
    )
    wait_for_room(lab)
    drop_caches()
    import_s = shell(f"{rbd_cli} import --no-progress {raw} {ANCHOR_RESTORED}")
    raw.unlink()
    run(["rbd", "-c", str(lab.ceph_conf), "rm", "--no-progress", ANCHOR_RESTORED])

    steady_changed = steady_compressed = 0
    grown_from = du_bytes(target)
    steady = []
    say(f"{STEADY_BACKUPS} steady incrementals")
    for _ in range(STEADY_BACKUPS):
        data = volume.change(STEADY_BYTES)
        steady_changed += len(data)
        steady_compressed += zstd_bytes(data)
        steady.append(backed_up(svc, lab, take(svc)))
    grown = du_bytes(target) - grown_from
    say("done")
    restic_start_s = restic_start_seconds(repo)

    return {
        "allocated_bytes": allocated,
        "changed_bytes": len(changed),
        "full": full,
        "full_anchor": {"seconds": round(full_anchor, 3), "bytes": full_anchor_bytes},
        "incremental": incremental,
        "incremental_anchor": {
            "seconds": round(incremental_anchor, 3),
            "ceph_read_bytes": anchor_read,
        },
        "restore": {
            "seconds": round(restore_s, 3),
            "data_bytes": restored.data_bytes,
            "backups_applied": restored.backups_applied,
            "identical": restored_equal,
            "restic_dump_seconds": round(restic_read_s, 3),
        },
        "restore_anchor": {"seconds": round(import_s, 3)},
        "restic_start_seconds": round(restic_start_s, 3),
        "steady": {
            "backups": steady,
            "changed_bytes": steady_changed,
            "zstd_1_bytes": steady_compressed,
            "repository_grew_bytes": grown,
        },
    }


def ratios(m: dict[str, Any]) -> dict[str, float]:
    allocated = m["allocated_bytes"]
    return {
        "incremental_read_over_changed": m["incremental"]["ceph_read_bytes"] / m["changed_bytes"],
        "incremental_speedup_over_qemu_img_convert": m["incremental_anchor"]["seconds"]
        / m["incremental"]["seconds"],
        "full_throughput_over_rbd_export_zstd": (allocated / m["full"]["seconds"])
        / (allocated / m["full_anchor"]["seconds"]),
        "restore_throughput_over_rbd_import": m["restore_anchor"]["seconds"]
        / m["restore"]["seconds"],
        "steady_stored_over_zstd_of_changed": m["steady"]["repository_grew_bytes"]
        / m["steady"]["zstd_1_bytes"],
    }


def floors(m: dict[str, Any]) -> dict[str, float]:
    """The best each goal allows on this machine, from parts measured in the same run: a
    verified incremental backup cannot beat two restic starts, a verified full backup its own
    upload, a restore restic's reading of its streams."""
    full = m["full"]["phases"]
    return {
        # The read-back starts once the upload ended: two restic starts one after the other.
        "incremental_two_restic_starts_over_qemu_img_convert": m["incremental_anchor"]["seconds"]
        / (2 * m["restic_start_seconds"]),
        "full_upload_alone_over_rbd_export_zstd": m["full_anchor"]["seconds"]
        / (full["plan_s"] + full["upload_s"]),
        "restore_restic_dump_alone_over_rbd_import": m["restore_anchor"]["seconds"]
        / m["restore"]["restic_dump_seconds"],
    }


GOALS = {
    "incremental_read_over_changed": "<= 1.1",
    "incremental_speedup_over_qemu_img_convert": ">= 10",
    "full_throughput_over_rbd_export_zstd": ">= 0.8",
    "restore_throughput_over_rbd_import": ">= 0.8",
    "steady_stored_over_zstd_of_changed": "<= 1.2",
}


def main() -> Path:
    lab = lab_stack.up()
    with tempfile.TemporaryDirectory(prefix="hostsnap-bench-backup-", dir="/var/tmp") as tmp:
        state, target = Path(tmp) / "state", Path(tmp) / "target"
        target.mkdir()
        config = AgentConfig(
            state_dir=state, ceph_conf=str(lab.ceph_conf), backup_targets_dir=state / "targets"
        )
        svc = open_services(config)
        try:
            added = targets.add(config.backup_targets_dir, TARGET, str(target / "restic"))
            repo = repository(config, added)
            repo.init()
            with bench_volume(lab) as volume:
                measured = measure(lab, svc, repo, volume, target)
        finally:
            svc.close()
            shutil.rmtree(state, ignore_errors=True)
    found, floor = ratios(measured), floors(measured)
    for name, value in found.items():
        print(f"  {name}: {value:.2f} (goal {GOALS[name]})")
    for name, value in floor.items():
        print(f"  floor {name}: {value:.2f}")
    return write_report(
        "backup",
        ratio=found["incremental_speedup_over_qemu_img_convert"],
        goal="incremental backup, qemu-img convert -O qcow2 time / hostsnap time; goal >= 10",
        measured={**measured, "ratios": found, "goals": GOALS, "floors": floor},
        anchor={
            "full": "rbd export img@snap - | zstd -1 > file",
            "incremental": "qemu-img convert -O qcow2 rbd:pool/img@snap target/file.qcow2",
            "restore": "rbd import file pool/img",
            "steady": "zstd -1 of the changed bytes",
        },
    )


if __name__ == "__main__":
    main()
