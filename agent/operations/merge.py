"""Merging one layer of a file disk into its backing file: libvirt block commit for a running
domain (active commit with pivot when the layer is the active image), qemu-img offline.

A merge is two steps, journalled apart by the callers: `merge_into_backing` (after which
`base` holds `top`'s data and the disk no longer uses `top`) and `remove_layer` (the other
images still backed by `top` are pointed at `base`, then `top` is deleted)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent import faults
from agent.errors import Cancelled, OperationFailed, Precondition
from agent.hypervisor import domain_xml, qemu_img, qemu_process
from agent.model import DomainState
from agent.operations import block_jobs, pause, volumes

# Control lives with Speed (which steers by it); merge.Control stays its name for callers.
from agent.operations.merge_speed import Control as Control
from agent.operations.merge_speed import Speed
from agent.operations.services import Services

log = logging.getLogger(__name__)


def children(path: str) -> list[str]:
    """The images in the same directory whose backing file is `path`."""
    return backed_by(Path(path).parent).get(path, [])


def backed_by(directory: Path) -> dict[str, list[str]]:
    """For the images in `directory`: backing file -> the images on it (one scan)."""
    found: dict[str, list[str]] = {}
    if not directory.is_dir():
        return found  # e.g. the "directory" of an rbd: backing
    for candidate in sorted(directory.iterdir()):
        if not candidate.is_file():
            continue
        try:
            backing = qemu_img.backing_file(str(candidate))
        except OSError:
            continue  # vanished or unreadable: not an image of ours
        if backing is not None and backing != str(candidate):
            found.setdefault(backing, []).append(str(candidate))
    return found


def merge_into_backing(
    svc: Services,
    domain: str,
    target: str,
    top: str,
    base: str,
    live: bool,
    control: Control,
    between: tuple[str, ...] = (),
) -> str:
    """Writes `top` into `base` (its backing file, or one further down: the images
    `between` go with `top`) and takes `top` out of the disk's chain. Returns the active
    image afterwards."""
    other_children = [c for c in children(base) if c not in (top, *between)]
    if other_children:
        raise Precondition(
            f"{base} is also the backing file of {', '.join(other_children)}; merging {top} into "
            "it would change what those images read",
            reason="LAYER_SHARED",
        )
    if live:
        return _merge_live(svc, domain, target, top, base, control)
    return _merge_offline(svc, domain, target, top, base, control)


def remove_layer(svc: Services, top: str, base: str) -> None:
    """After a merge: images still backed by `top` (other branches) now read `base`, which
    holds the same data; then `top` is deleted."""
    base_format = qemu_img.chain(base)[0].format
    for child in children(top):
        qemu_img.rebase_unsafe(child, base, base_format)
    if os.path.exists(top):
        os.unlink(top)


def forget_merged(
    svc: Services,
    domain: str,
    target: str,
    top: str,
    base: str,
    active: str,
    between: tuple[str, ...] = (),
) -> None:
    """After a merge of `top` (and the images `between` it and `base`) into `base`: those
    images go, `base` holds their snapshots, `active` is the disk's active image."""
    remove_layer(svc, top, base)
    for path in between:
        if os.path.exists(path):
            os.unlink(path)
        svc.journal.forget_layer(path)
    svc.journal.move_snapshot_content(top, base)
    svc.journal.forget_layer(top)
    svc.journal.set_active_layer(domain, target, active, [])
    svc.publish_layers()


def remove_unused_overlay(path: str) -> None:
    """Deletes an overlay the agent made that never became active, unless it holds data (then
    something wrote to it, and it is kept for the operator)."""
    if not os.path.exists(path):
        return
    if qemu_img.has_own_data(path):
        raise OperationFailed(
            f"{path} was never recorded as active but holds data; it is kept, inspect it",
            reason="OVERLAY_HAS_DATA",
        )
    os.unlink(path)


def resume(
    svc: Services,
    job_id: str,
    domain: str,
    target: str,
    top: str,
    base: str,
    live: bool,
    bandwidth_mib: int = 0,
) -> None:
    """Finishes a merge an earlier agent process started (journalled with `live` as it was).

    A commit that finished leaves `top` full of data and out of the chain: it must not be
    committed again, live or offline (the domain may have run on `base` since, and the old
    data would overwrite newer). An offline commit that did not finish can be repeated:
    `qemu-img commit` of the same data is harmless."""
    control = Control(job_id, bandwidth_mib)
    state = svc.host.state(domain)[0]
    running = volumes.is_live(state)
    if running and svc.host.block_job(domain, target):
        # The agent that started it may have slowed it down: back to the requested speed.
        svc.host.block_job_set_speed(domain, target, bandwidth_mib)
        chain = domain_xml.backing_chain(svc.host.xml(domain), target)
        wait_commit(svc, domain, target, top, chain[:1] == [top], control)
        chain_after = _wait_chain_without(svc, domain, target, top, chain)
        if chain_after[0] != base:
            make_durable(svc, job_id, domain, base)
        return
    active = volumes.now(svc, domain, state).active(target)
    chain = [layer.path for layer in qemu_img.chain(active)] if active else []
    if top not in chain and (live or active is not None):
        if live and running and active != base:  # the live commit had finished
            make_durable(svc, job_id, domain, base)
        return
    if running and top in chain:
        _merge_live(svc, domain, target, top, base, control)
    else:
        _merge_offline(svc, domain, target, top, base, control)


def _merge_live(
    svc: Services, domain: str, target: str, top: str, base: str, control: Control
) -> str:
    chain = domain_xml.backing_chain(svc.host.xml(domain), target)
    if top not in chain or base not in chain:
        raise Precondition(f"{top} and {base} are not both in the running chain of {target}")
    is_active = chain[0] == top
    if not is_active:
        _ensure_flushable(svc, domain, base)
    speed = Speed(svc, domain, target, control, is_active)
    svc.host.block_commit(
        domain, target, top, base, active=is_active, bandwidth_mib=speed.starting()
    )
    wait_commit(svc, domain, target, top, is_active, control, speed)
    chain_after = _wait_chain_without(svc, domain, target, top, chain)
    if not is_active:
        make_durable(svc, control.job_id, domain, base)
    log.info("domain %s disk %s: merged %s; active image %s", domain, target, top, chain_after[0])
    return chain_after[0]


def wait_commit(
    svc: Services,
    domain: str,
    target: str,
    top: str,
    is_active: bool,
    control: Control,
    speed: Speed | None = None,
) -> None:
    """Waits for a block commit to end; an active commit is pivoted once really ready (cursor
    at the end and libvirt's mirror marked ready)."""
    speed = speed or Speed(svc, domain, target, control, is_active)
    timeout = svc.config.block_job_timeout
    watch = block_jobs.Watch(
        cancelled=lambda: Cancelled(
            f"cancelled during the merge of {top}; the block job was aborted and the chain "
            "is as it was"
        ),
        timed_out=lambda: OperationFailed(
            f"block commit of {top} did not finish in {timeout:.0f} s; "
            "aborted, the chain is unchanged"
        ),
        cancel_of=control.job_id if control.cancellable else None,
        progress=control.progress,
        adjust_speed=speed.adjust,
        each_round=lambda: faults.point(faults.Step.DURING_BLOCK_COMMIT),
    )

    def pivoted(info: block_jobs.Info) -> bool:
        ready = info and info["cur"] == info["end"]
        if ready and domain_xml.mirror_ready(svc.host.xml(domain), target):
            svc.host.block_job_pivot(domain, target)
            return True
        if not info:
            chain = domain_xml.backing_chain(svc.host.xml(domain), target)
            if chain[:1] == [top]:
                raise _aborted_outside(top, chain)
            raise OperationFailed(f"the block commit of {top} on {domain}/{target} vanished")
        return False

    block_jobs.wait(svc, domain, target, watch, pivoted if is_active else block_jobs.ended)


def _aborted_outside(top: str, chain: list[str]) -> Cancelled:
    return Cancelled(
        f"the block job merging {top} was aborted outside hostsnap (e.g. `virsh blockjob "
        f"--abort`); the chain is unchanged: {' <- '.join(chain)}",
        reason="BLOCK_JOB_ABORTED",
    )


def _wait_chain_without(
    svc: Services, domain: str, target: str, top: str, before: list[str]
) -> list[str]:
    """libvirt updates the chain right after the job ends; verify it really lost `top`. A
    chain still as it was means the job was aborted by someone else."""

    def unsettled(chain: list[str]) -> Exception:
        if chain == before:
            return _aborted_outside(top, chain)
        return OperationFailed(f"after the commit, {top} is still in the chain {chain}")

    return block_jobs.settle(
        svc,
        lambda: domain_xml.backing_chain(svc.host.xml(domain), target),
        lambda chain: top not in chain and not svc.host.block_job(domain, target),
        unsettled,
    )


def _ensure_flushable(svc: Services, domain: str, base: str) -> None:
    """Before a commit below the active image starts: when its end may need make_durable's
    pause, the domain must be running (a paused one cannot be paused to flush)."""
    state = svc.host.state(domain)[0]
    if state != DomainState.RUNNING and qemu_process.opened_read_write(domain, base) is not False:
        raise Precondition(
            f"domain {domain} is {state} and {base} may be open read-write in QEMU: a merge "
            "into it could not be flushed to disk; resume the domain or shut it off first",
            reason="DOMAIN_NOT_RUNNING",
        )


def make_durable(svc: Services, job_id: str, domain: str, image: str) -> None:
    """Before the layers whose data a live block job copied into `image` are deleted, that
    data must be on disk, not only in QEMU's metadata cache. A block commit into a read-only
    base is: QEMU flushes the base when it reopens it read-only at the end. It skips that for
    a base open read-write already (the base of an aborted active commit, see qemu_process),
    and a block pull writes into the active image, which the guest flushes when it likes.
    Then the domain is paused for the moment it takes: pausing makes QEMU flush every node."""
    if qemu_process.opened_read_write(domain, image) is False:
        return
    log.info("job %s: domain %s: flushing %s before the merged layers go", job_id, domain, image)
    with pause.paused(svc, job_id, domain, f"flush {image} to disk"):
        pass


def _merge_offline(
    svc: Services, domain: str, target: str, top: str, base: str, control: Control
) -> str:
    qemu_img.commit(top, base, control.progress)
    xml = svc.host.xml(domain, inactive=True)
    sources = {v.target: v.path for v in domain_xml.volumes(domain, xml)}
    active = base if sources.get(target) == top else sources.get(target)
    if active is None:
        raise Precondition(
            f"{top} was merged into {base}, but the definition of {domain} has no file disk "
            f"{target} any more; point the disk at the chain's top image by hand",
            reason="DISK_GONE",
        )
    redefine_offline(svc, domain, target, active)
    return active


def redefine_offline(svc: Services, domain: str, target: str, active: str) -> None:
    """After qemu-img changed a stopped domain's chain: the definition names `active`, without
    the `<backingStore>` chain libvirt wrote into it at live snapshots, which may name layers
    that are gone (libvirt then refuses to start the domain); libvirt reads the chain from the
    images instead."""
    xml = svc.host.xml(domain, inactive=True)
    svc.host.define(domain_xml.with_disk_source(xml, target, active))
