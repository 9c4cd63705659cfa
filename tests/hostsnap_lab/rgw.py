"""Ceph's S3 gateway (Debian's radosgw) on the lab's cluster, on loopback, for S3 backup
targets: one user, whose keys the lab writes to `ceph/s3-credentials` as the AWS_* lines a
hostsnap target's credentials file holds. The gateway's pools live on the memstore OSD, so a
rebuilt cluster needs a new gateway and user: both are made again when they do not answer."""

from __future__ import annotations

import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .paths import LabPaths
from .procs import processes_using, terminate
from .run import LabError, run

log = logging.getLogger(__name__)

ENDPOINT = "127.0.0.1:7480"
URL = f"http://{ENDPOINT}"
NAME = "client.rgw.lab"
USER = "hostsnap-lab"
# Lab-only keys: the gateway listens on loopback and holds nothing but test backups.
ACCESS_KEY = "HOSTSNAPLABACCESSKEY"
SECRET_KEY = "hostsnap-lab-secret-key-for-loopback-only"
START_TIMEOUT = 180.0


def credentials_file(paths: LabPaths) -> Path:
    return paths.ceph / "s3-credentials"


def answers() -> bool:
    try:
        with urllib.request.urlopen(URL, timeout=3) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_running(paths: LabPaths) -> None:
    if not answers():
        stop(paths)
        start(paths)
    ensure_user(paths)


def start(paths: LabPaths) -> None:
    log.info("starting radosgw at %s", URL)
    log_file = paths.ceph / "log" / "radosgw.log"
    with log_file.open("ab") as output:
        subprocess.Popen(
            [
                "radosgw", "-f", "-c", str(paths.ceph_conf), "-n", NAME,
                f"--rgw-frontends=beast endpoint={ENDPOINT}",
                # radosgw asks its monitor for a "secure" connection, which needs cephx; the
                # lab runs auth none, whose connections are "crc".
                "--ms-mon-client-mode=crc secure",
                f"--log-file={log_file}",
                f"--admin-socket={paths.ceph / 'run' / 'radosgw.asok'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # outlives `hostsnap-lab up`, as the other daemons do
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while not answers():
        if time.monotonic() > deadline:
            raise LabError(
                f"radosgw did not answer at {URL} in {START_TIMEOUT:.0f} s (see {log_file})"
            )
        time.sleep(1)


def ensure_user(paths: LabPaths) -> None:
    admin = ["radosgw-admin", "-c", str(paths.ceph_conf), "-n", NAME]
    try:
        run([*admin, "user", "info", f"--uid={USER}"])
    except LabError:
        run(
            [
                *admin,
                "user",
                "create",
                f"--uid={USER}",
                "--display-name=hostsnap lab",
                f"--access-key={ACCESS_KEY}",
                f"--secret-key={SECRET_KEY}",
            ]
        )
    path = credentials_file(paths)
    path.write_text(f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n")
    path.chmod(0o600)


def set_quota(paths: LabPaths, max_bytes: int) -> None:
    """The size every bucket of the lab's user may reach (-1: no limit), enforced by the
    gateway on each upload."""
    admin = ["radosgw-admin", "-c", str(paths.ceph_conf), "-n", NAME]
    scope = ["--quota-scope=bucket", f"--uid={USER}"]
    run([*admin, "quota", "set", *scope, f"--max-size={max_bytes}"])
    run([*admin, "quota", "enable" if max_bytes >= 0 else "disable", *scope])


def stop(paths: LabPaths, timeout: float = 20.0) -> None:
    terminate(processes_using(paths.ceph_conf, ("radosgw",)), timeout)
