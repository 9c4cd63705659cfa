"""The agent's settings. Seconds everywhere; the file format and overrides come with the
service (agent.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = Path("/var/lib/hostsnap")
    libvirt_uri: str = "qemu:///system"
    ceph_conf: str = "/etc/ceph/ceph.conf"
    # The guest is thawed at this hard deadline after freeze even if a snapshot call hangs.
    freeze_deadline: float = 5.0
    # A consistency group's hold (FreezeForGroup) keeps a guest frozen at most this long.
    group_hold_max: float = 30.0
    guest_agent_timeout: int = 10
    # A domain asked to shut down for a revert is destroyed after this many seconds.
    stop_timeout: float = 120.0
    # A block commit that has not finished by then is aborted (the chain stays as it was).
    block_job_timeout: float = 3600.0
    # Free space a file pool must keep, as a fraction of the data a snapshot may add
    # (the operator guidance is 25% overhead).
    pool_headroom: float = 0.25
    # Quiesced RBD snapshots of running domains freeze the guest only while its disk switches
    # to a temporary local overlay (see operations/rbd_overlay.py), when the overlay
    # directory has this many bytes free; otherwise the guest stays frozen across the
    # RBD snapshot call.
    rbd_local_overlay: bool = True
    rbd_overlay_min_free: int = 1 << 30

    # Volumes with longer backing chains (RBD: clone depth) are reported as over the limit
    # (CloudStack operators know it as snapshot.delta.max).
    max_chain_depth: int = 16

    # One NAME.toml and NAME.key per backup target (agent/backups/targets.py).
    backup_targets_dir: Path = Path("/etc/hostsnap/backup-targets")

    # Where the kernel's sysfs is (temperatures); tests point it at a fixture tree.
    sysfs_root: Path = Path("/sys")

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite"

    @property
    def rbd_overlay_dir(self) -> Path:
        return self.state_dir / "rbd-overlays"

    @property
    def restic_cache(self) -> Path:
        return self.state_dir / "restic-cache"

    @property
    def layers_path(self) -> Path:
        """The active image and known layers of each file volume, read by the libvirt hook."""
        return self.state_dir / "layers.json"
