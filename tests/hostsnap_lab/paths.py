"""Where the lab keeps what it makes: everything under one state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/hostsnap-lab")
STATE_DIR_ENV = "HOSTSNAP_LAB_DIR"

QCOW2_DOMAIN = "lab-qcow2"
RBD_DOMAIN = "lab-rbd"
RBD_POOL = "rbd"


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @classmethod
    def from_env(cls) -> LabPaths:
        return cls(Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)).absolute())

    @property
    def images(self) -> Path:
        """Kernel, initramfs and the pristine guest data disk."""
        return self.root / "images"

    @property
    def pool(self) -> Path:
        """The file storage pool directory (as a CloudStack NFS or local primary pool)."""
        return self.root / "pool"

    @property
    def ceph(self) -> Path:
        return self.root / "ceph"

    @property
    def ceph_conf(self) -> Path:
        return self.ceph / "ceph.conf"

    @property
    def agent_state(self) -> Path:
        """The state directory of the agent the lab tests run (journal, layer map)."""
        return self.root / "agent"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kernel(self) -> Path:
        return self.images / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.images / "initramfs.cpio.gz"

    @property
    def base_disk(self) -> Path:
        return self.images / "data.raw"

    @property
    def qcow2_disk(self) -> Path:
        return self.pool / f"{QCOW2_DOMAIN}.qcow2"

    def console_log(self, domain: str) -> Path:
        return self.logs / f"{domain}.console.log"

    @property
    def libvirtd_marker(self) -> Path:
        """Present when the lab started libvirtd, so `down` stops only what it started."""
        return self.root / "libvirtd.started-by-lab"
