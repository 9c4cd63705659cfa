"""The short freeze of RBD disks: the guest is frozen only while its disk switches to a local
overlay; the RBD snapshot, taken after the thaw, is the disk as it was at the freeze."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from agent.model import Consistency, Quiesce, RbdSource, SnapshotRequest
from agent.operations import snapshot
from agent.operations.services import Services
from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab

from .support import sha256

WRITER_SEQ = "/data/writer.seq"


def export(lab: Lab, spec: str, path: Path) -> Path:
    path.unlink(missing_ok=True)
    rbd = ["rbd", "-c", str(lab.ceph_conf), "export", "--no-progress", spec, str(path)]
    subprocess.run(rbd, check=True, capture_output=True)
    return path


def guest_seq(dom: libvirt.virDomain) -> int:
    return int(guest_agent.exec_in_guest(dom, ["/bin/cat", WRITER_SEQ]).strip())


def image_seq(image: Path) -> int:
    out = subprocess.run(
        ["debugfs", "-R", "cat /writer.seq", str(image)], capture_output=True, text=True
    )
    return int(out.stdout.strip())


def test_the_rbd_snapshot_is_the_disk_at_the_freeze(
    lab: Lab,
    conn: libvirt.virConnect,
    svc: Services,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    dom = conn.lookupByName("lab-rbd")
    seen: dict[str, object] = {}
    take_snapshot = svc.rbd.create_snapshot

    def observed(source: RbdSource, name: str) -> None:
        # Called after the thaw. The guest keeps writing for a while; the image must not move.
        seen["at_call"] = sha256(export(lab, source.spec, tmp_path / "image"))
        seq = guest_seq(dom)
        time.sleep(1.5)
        seen["guest_wrote"] = guest_seq(dom) > seq
        seen["after_guest_wrote"] = sha256(export(lab, source.spec, tmp_path / "image"))
        take_snapshot(source, name)

    monkeypatch.setattr(svc.rbd, "create_snapshot", observed)
    result = snapshot.create(svc, SnapshotRequest("lab-rbd", quiesce=Quiesce.REQUIRED))

    (disk,) = result.disks
    assert disk.method == "rbd-short-freeze"
    assert result.consistency == Consistency.APPLICATION
    assert seen["guest_wrote"] is True
    snap = export(lab, f"rbd/lab-rbd@hostsnap-{disk.snapshot_id}", tmp_path / "snap")
    assert seen["at_call"] == seen["after_guest_wrote"] == sha256(snap)
    # The filesystem in the snapshot is clean, as a frozen one is; the writer went on after.
    fsck = subprocess.run(["e2fsck", "-fn", str(snap)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert guest_seq(dom) > image_seq(snap) > 0
    # The guest's writes since the freeze reached the image once the overlay went back.
    assert sha256(export(lab, "rbd/lab-rbd", tmp_path / "image")) != seen["at_call"]
    assert disk.active_image == "rbd/lab-rbd"
    assert "<source protocol='rbd' name='rbd/lab-rbd'" in dom.XMLDesc(0)
    assert "<source protocol='rbd' name='rbd/lab-rbd'" in dom.XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE
    )
    assert not list(svc.config.rbd_overlay_dir.iterdir())
    assert guest_agent.fsfreeze_status(dom) == "thawed"
    print(f"guest frozen {1000 * result.frozen_seconds:.0f} ms")
