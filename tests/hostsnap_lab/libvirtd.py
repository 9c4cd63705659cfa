"""Starts libvirtd without systemd, as real-stack.md describes, and stops it if the lab did."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from .paths import LabPaths
from .run import LabError

log = logging.getLogger(__name__)

URI = "qemu:///system"
PID_FILE = Path("/run/libvirtd.pid")


def answers(timeout: float = 10.0) -> bool:
    try:
        probe = subprocess.run(
            ["virsh", "-c", URI, "version"], capture_output=True, timeout=timeout, check=False
        )
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return probe.returncode == 0


def ensure_running(paths: LabPaths, timeout: float = 30.0) -> bool:
    """Starts virtlogd and libvirtd when libvirt does not answer; True when the lab started it."""
    if answers():
        return False
    log.info("starting virtlogd and libvirtd (no systemd)")
    # virtlogd -d exits non-zero when one already runs; that is fine.
    subprocess.run(["virtlogd", "-d"], capture_output=True, check=False)
    # Without -l: TCP listening without certificates makes libvirtd refuse to start.
    started = subprocess.run(["libvirtd", "-d"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise LabError(f"libvirtd -d failed: {started.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline:
            raise LabError(f"libvirtd started but {URI} did not answer within {timeout:.0f} s")
        time.sleep(0.5)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.libvirtd_marker.write_text(f"{URI}\n")
    return True


def restart(paths: LabPaths) -> None:
    """Restarts libvirtd (so it reads the hooks directory again) if it runs."""
    if answers():
        stop(paths)
        ensure_running(paths)


def stop_if_started_by_lab(paths: LabPaths) -> None:
    if paths.libvirtd_marker.exists():
        stop(paths)


def stop(paths: LabPaths, timeout: float = 15.0) -> None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return
    log.info("stopping libvirtd (pid %d)", pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    paths.libvirtd_marker.unlink(missing_ok=True)
