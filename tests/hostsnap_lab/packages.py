"""Installs the Debian packages the lab and the project need, only those that are missing.

Standard library only: `make` runs it with the system Python before the virtual environment
exists (``PYTHONPATH=tests /usr/bin/python3 -m hostsnap_lab.packages``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable

# Debian 12 package names; real-stack.md says which need each one.
REQUIRED = (
    "python3-venv",
    "python3-grpc-tools",
    "python3-grpcio",
    "python3-protobuf",
    "python3-psutil",
    "qemu-system-x86",
    "qemu-utils",
    "qemu-block-extra",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "python3-libvirt",
    "qemu-guest-agent",
    "linux-image-amd64",
    "busybox-static",
    "e2fsprogs",
    "cpio",
    "ceph-mon",
    "ceph-osd",
    "ceph-common",
    "python3-rados",
    "python3-rbd",
    # Backups: the repository engine, qcow2 images read and written through qemu-nbd, and
    # Ceph's S3 gateway for S3 targets.
    "restic",
    "radosgw",
    "python3-libnbd",
    # Building and checking hostsnap's own packages (make packages, tests/lab/test_packages.py).
    "debhelper",
    "dh-python",
    "pybuild-plugin-pyproject",
    "python3-all",
    "python3-setuptools",
    "lintian",
    "rpm",
    # The man pages are made from the programs' argparse parsers (packaging/man/generate.py).
    "python3-argparse-manpage",
    # promtool lints the agent's metrics text (tests/unit/test_metrics.py).
    "prometheus",
    # The controller's store: MariaDB for its multi-controller tests (a private mariadbd each
    # run, tests/mariadb/), and the libraries its DEB runs on, which the store's suite runs on
    # too under Debian's own Python (tests/unit/store/test_store_debian_sqlalchemy.py).
    "mariadb-server",
    "python3-sqlalchemy",
    "python3-alembic",
    "python3-pymysql",
    "python3-pytest",
)


def missing(packages: Iterable[str]) -> list[str]:
    """The packages of the list that dpkg does not report as installed."""
    absent = []
    for name in packages:
        query = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if query.stdout.strip() != "installed":
            absent.append(name)
    return absent


def ensure_installed(packages: Iterable[str] = REQUIRED) -> list[str]:
    """Installs what is missing with apt-get and returns what was installed."""
    absent = missing(packages)
    if not absent:
        return []
    if os.geteuid() != 0:
        raise SystemExit(f"these Debian packages are missing and need root: {' '.join(absent)}")
    print(f"installing Debian packages: {' '.join(absent)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *absent],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return absent


if __name__ == "__main__":
    ensure_installed()
    sys.exit(0)
