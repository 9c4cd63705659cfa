"""Builds the tiny lab guest: a Debian kernel, an initramfs with busybox and the real qemu-ga,
and an ext4 data disk that the guest's writer keeps writing to."""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from .paths import LabPaths
from .run import LabError, run

log = logging.getLogger(__name__)

QEMU_GA = Path("/usr/sbin/qemu-ga")
BUSYBOX = Path("/bin/busybox")
DATA_DISK_MIB = 128

# Load order matters: virtio needs virtio_ring first, ext4 needs jbd2, mbcache and crc16.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",
    "ext4",
)

# The writer stands for the guest's workload: a sequence number rewritten five times a second
# and an append-only log, both synced, so tests can tell whether the guest's disk is moving.
WRITER = """#!/bin/sh
echo $$ > /run/writer.pid
n=$(cat /data/writer.seq 2>/dev/null || echo 0)
while true; do
    n=$((n + 1))
    echo "$n" > /data/writer.seq
    echo "$n $(date +%s)" >> /data/writer.log
    sync
    sleep 0.2
done
"""

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /data /tmp
ln -sf /run /var/run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko || echo "hostsnap-lab: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 /dev/vda /data || echo "hostsnap-lab: mounting /dev/vda failed"
port=
for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename $p)
done
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -d -t /run || echo "hostsnap-lab: qemu-ga failed"
/bin/writer > /dev/null 2>&1 &
echo "hostsnap-lab: guest ready (agent port $port)"
while true; do sleep 3600; done
"""


def render_init() -> str:
    return INIT.format(modules=" ".join(MODULES))


def kernel_version() -> str:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabError("no /boot/vmlinuz-* found: install linux-image-amd64")
    return kernels[-1].name.removeprefix("vmlinuz-")


def build_stamp(version: str) -> str:
    inputs = "\n".join([version, render_init(), WRITER, str(DATA_DISK_MIB)])
    return hashlib.sha256(inputs.encode()).hexdigest()


def ensure_built(paths: LabPaths) -> None:
    """Builds kernel, initramfs and base disk unless an identical build is already there."""
    version = kernel_version()
    stamp_file = paths.images / "build.stamp"
    stamp = build_stamp(version)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    log.info("building the lab guest for kernel %s", version)
    paths.images.mkdir(parents=True, exist_ok=True)
    paths.images.chmod(0o755)
    shutil.copyfile(f"/boot/vmlinuz-{version}", paths.kernel)
    build_initramfs(version, paths.initramfs)
    build_data_disk(paths.base_disk)
    for artefact in (paths.kernel, paths.initramfs, paths.base_disk):
        artefact.chmod(0o644)
    stamp_file.write_text(stamp)


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ldd lists for a binary, the dynamic loader included."""
    output = run(["ldd", str(binary)]).stdout
    return [Path(p) for p in re.findall(r"(/\S+)\s+\(0x", output)]


def build_initramfs(version: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hostsnap-lab-initramfs-") as tmp:
        root = Path(tmp)
        for d in ("bin", "usr/sbin", "lib/modules", "var"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin/busybox")
        shutil.copy2(QEMU_GA, root / "usr/sbin/qemu-ga")
        for lib in shared_libraries(QEMU_GA):
            dest = root / lib.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), dest)
        modules_dir = Path("/lib/modules") / version
        for name in MODULES:
            found = list(modules_dir.rglob(f"{name}.ko"))
            if not found:
                raise LabError(f"kernel module {name}.ko not found under {modules_dir}")
            shutil.copy2(found[0], root / "lib/modules" / f"{name}.ko")
        for name, text in (("init", render_init()), ("bin/writer", WRITER)):
            (root / name).write_text(text)
            (root / name).chmod(0o755)
        archive = shlex.quote(str(target))
        pack = subprocess.run(
            f"find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > {archive}",
            shell=True,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if pack.returncode != 0:
            raise LabError(f"packing the initramfs failed: {pack.stderr.strip()}")


def build_data_disk(target: Path) -> None:
    """An ext4 image labelled `data` holding a marker file, written as a raw image."""
    with tempfile.TemporaryDirectory(prefix="hostsnap-lab-data-") as tmp:
        (Path(tmp) / "hostsnap-lab").write_text("hostsnap lab data disk\n")
        target.unlink(missing_ok=True)
        run(["mkfs.ext4", "-q", "-F", "-L", "data", "-d", tmp, str(target), f"{DATA_DISK_MIB}M"])
