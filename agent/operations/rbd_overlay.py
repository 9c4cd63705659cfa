"""The short freeze for RBD disks of a running domain.

Creating an RBD snapshot waits for the monitor to allocate a snapshot id (about a second
with default monitor settings); a guest frozen across that call stays frozen that long.
Instead, while the guest is frozen, the disk switches to a temporary local qcow2 overlay
over the RBD image (one libvirt call, milliseconds). Once thawed, the guest writes into the
overlay and the RBD image receives nothing, so a snapshot taken then is the disk as it was
at the freeze. The overlay is then committed back into the image and the disk pivots to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from pathlib import Path

from agent import faults
from agent.errors import Conflict, OperationFailed
from agent.hypervisor import domain_xml, qemu_img
from agent.model import RbdSource, Volume, VolumeKind
from agent.operations import block_jobs, merge, volumes
from agent.operations.services import Services

log = logging.getLogger(__name__)


def overlay_path(svc: Services, volume: Volume, snapshot_id: str) -> str:
    assert volume.rbd is not None
    name = f"{volume.rbd.pool}.{volume.rbd.image}.{snapshot_id}.qcow2"
    return str(svc.config.rbd_overlay_dir / name)


def unusable_because(svc: Services, chosen: list[Volume], live: bool) -> str:
    """Why the short freeze cannot be used for these disks ("" when it can)."""
    if not any(v.kind == VolumeKind.RBD for v in chosen):
        return "no RBD disk"
    if not live:
        return "the domain is not running (nothing to freeze)"
    if not svc.config.rbd_local_overlay:
        return "disabled by [agent] rbd_local_overlay"
    if any(v.kind == VolumeKind.RBD and v.format != "raw" for v in chosen):
        return "an RBD disk is not in raw format"
    directory = svc.config.rbd_overlay_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # QEMU runs as its own user: it must reach the overlay (libvirt gives it the file),
        # without being able to list the directory.
        directory.chmod(0o711)
        free = shutil.disk_usage(directory).free
    except OSError as e:
        return f"the overlay directory {directory} cannot be used: {e}"
    closed = [p for p in directory.parents if not p.stat().st_mode & stat.S_IXOTH]
    if closed:
        return f"QEMU cannot reach the overlay directory: {closed[0]} is not searchable by others"
    if free < svc.config.rbd_overlay_min_free:
        return f"the overlay directory {directory} has only {free} bytes free"
    return ""


def backing_spec(source: RbdSource, default_conf: str) -> str:
    """qemu's `rbd:` form of an image, so the overlay also opens after a QEMU restart."""

    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    spec = f"rbd:{escaped(source.pool)}/{escaped(source.image)}"
    if source.config_file or not source.monitors:
        return f"{spec}:conf={escaped(source.config_file or default_conf)}"
    return f"{spec}:mon_host={escaped(';'.join(source.monitors))}"


def create(svc: Services, volume: Volume, path: str) -> None:
    assert volume.rbd is not None
    spec = backing_spec(volume.rbd, svc.config.ceph_conf)
    qemu_img.create_overlay_over_rbd(path, spec, svc.rbd.size(volume.rbd))


def merge_back(
    svc: Services,
    job_id: str,
    domain: str,
    target: str,
    overlay: str,
    disk_xml: str,
    begun_before: bool,
) -> None:
    """Commits the overlay into its RBD image and puts the disk back on the image (running:
    active commit and pivot; stopped: qemu-img commit), live and in the definition, from
    whatever point an earlier attempt reached: `begun_before` says one began committing this
    overlay, so a disk found back on RBD was pivoted by it and the overlay's data is in the
    image. Otherwise an overlay the disk does not use is removed only when it holds no data."""
    state = svc.host.state(domain)[0]
    live = volumes.is_live(state)
    committed = begun_before
    if live and svc.host.block_job(domain, target):
        _finish_commit_left_running(svc, job_id, domain, target, overlay)
        committed = True
    elif volumes.now(svc, domain, state).active(target) == overlay:
        if live:
            svc.host.block_commit(domain, target, None, None, active=True)
            faults.point(faults.Step.DURING_MERGE_BACK)
            merge.wait_commit(svc, domain, target, overlay, True, merge.Control(job_id))
            faults.point(faults.Step.AFTER_MERGE_BACK_PIVOT)
            _wait_back_on_rbd(svc, domain, target)
        else:
            qemu_img.commit(overlay)
        committed = True
    inactive = svc.host.xml(domain, inactive=True)
    if _kind(inactive, domain, target) != VolumeKind.RBD:
        svc.host.define(domain_xml.with_disk_element(inactive, target, disk_xml))
    if committed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(overlay)
    else:
        merge.remove_unused_overlay(overlay)
    log.info("domain %s disk %s: on RBD; overlay %s removed", domain, target, overlay)


def _finish_commit_left_running(
    svc: Services, job_id: str, domain: str, target: str, overlay: str
) -> None:
    """An agent that died during the merge back leaves QEMU's active commit running (libvirt
    refuses a second one): wait for it and pivot, as the dead agent would have."""
    xml = svc.host.xml(domain)
    if domain_xml.backing_chain(xml, target)[:1] != [overlay] or (
        domain_xml.mirror_job(xml, target) != "active-commit"
    ):
        raise Conflict(
            f"{domain}/{target} runs a block job that is not the commit of {overlay}; "
            "it stays on the overlay until that job ends",
            reason="BLOCK_JOB_RUNNING",
        )
    log.warning(
        "domain %s disk %s: finishing the commit of %s left running", domain, target, overlay
    )
    merge.wait_commit(svc, domain, target, overlay, True, merge.Control(job_id))
    _wait_back_on_rbd(svc, domain, target)


def _kind(xml: str, domain: str, target: str) -> VolumeKind | None:
    return {v.target: v.kind for v in domain_xml.volumes(domain, xml)}.get(target)


def _wait_back_on_rbd(svc: Services, domain: str, target: str) -> None:
    block_jobs.settle(
        svc,
        lambda: _kind(svc.host.xml(domain), domain, target),
        lambda kind: kind == VolumeKind.RBD,
        lambda kind: OperationFailed(f"after the pivot, {domain}/{target} is still not on RBD"),
    )


def leftovers(directory: Path) -> list[Path]:
    """Overlay files in the overlay directory (each should be gone after its job)."""
    return sorted(directory.glob("*.qcow2")) if directory.is_dir() else []
