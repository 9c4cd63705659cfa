"""Consolidate and flatten: shorter chains, with every kept snapshot reading as before.

Consolidate merges away the layers that hold no kept snapshot (chains.py says which): one
block commit per stretch of such layers, into the lowest of them, which then takes the
place of the layer above the stretch. Flatten copies the whole chain into the active image
(block pull, or qemu-img rebase offline); the volume's own layers below then go, and with
them the snapshots they held, which is why that needs `force`. RBD: flatten detaches a clone
from its parent; consolidation has nothing to merge."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from agent import faults, steps, validate
from agent.errors import Cancelled, InvalidArgument, OperationFailed, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.jobs import Job, JobState
from agent.model import ChainResult, DiskChainResult, DomainState, Volume, VolumeKind
from agent.operations import block_jobs, chains, jobrun, merge, stats, volumes
from agent.operations.services import Services

CONSOLIDATE = "consolidate"
FLATTEN = "flatten"


class Step(steps.StepName):
    MERGE = "merge"  # a stretch of layers is about to be committed into its base
    MERGED = "merged"  # it was: the disk no longer uses them
    FLATTEN = "flatten"  # the chain is about to be pulled into the active image
    RBD_FLATTEN = "rbd-flatten"  # an RBD clone is about to be detached from its parent
    FLATTENED = "flattened"  # the disk's active image holds all its data


@dataclass(frozen=True)
class Merge:
    target: str
    live: bool
    top: str
    base: str
    between: list[str]  # the layers between top and base, merged with top


@dataclass(frozen=True)
class Merged:
    target: str
    active: str


@dataclass(frozen=True)
class Flatten:
    target: str
    live: bool
    remove: list[str]  # the layers below that go once the active image holds their data
    lost: list[str]  # the snapshots whose layers go with them (a forced flatten)


@dataclass(frozen=True)
class OnDisk:
    target: str


@dataclass(frozen=True)
class ChainRequest:
    domain: str
    disks: tuple[str, ...] = ()  # target devs; empty means every disk
    bandwidth_mib: int = 0  # live block jobs run at most this many MiB/s (0: unlimited)
    force: bool = False  # flatten: also when the layers of kept snapshots would go
    idempotency_key: str | None = None


def consolidate(
    svc: Services, request: ChainRequest, on_started: Callable[[str], None] | None = None
) -> ChainResult:
    return _run(svc, CONSOLIDATE, request, _consolidate_volume, on_started)


def flatten(
    svc: Services, request: ChainRequest, on_started: Callable[[str], None] | None = None
) -> ChainResult:
    return _run(svc, FLATTEN, request, _flatten_volume, on_started)


VolumeStep = Callable[
    [Services, str, Volume, bool, ChainRequest, Callable[[float], None]], DiskChainResult
]


def _run(
    svc: Services,
    operation: str,
    request: ChainRequest,
    step: VolumeStep,
    on_started: Callable[[str], None] | None,
) -> ChainResult:
    if request.bandwidth_mib < 0:
        raise InvalidArgument("bandwidth_mib must be 0 (unlimited) or more")
    if request.force and operation != FLATTEN:
        raise InvalidArgument(f"force applies to flatten, not to {operation}")
    if len(set(request.disks)) != len(request.disks):
        raise InvalidArgument(f"a disk is named twice in {', '.join(request.disks)}")
    chosen = volumes.select(volumes.domain_volumes(svc, request.domain), request.disks)
    _check(svc, operation, request, chosen)  # a refused request keeps its idempotency key

    def body(job_id: str) -> ChainResult:
        record = functools.partial(svc.journal.record, job_id)
        checkpoint = functools.partial(jobrun.checkpoint, svc, job_id, "admission")
        with svc.admission.admitted(job_id, {stats.pool_of(v) for v in chosen}, record, checkpoint):
            current = volumes.select(volumes.domain_volumes(svc, request.domain), request.disks)
            live = _check(svc, operation, request, current)
            progress = jobrun.ProgressReporter(svc, job_id)
            share = 1 / len(current)
            done = []
            for i, volume in enumerate(current):
                part = progress.part(i * share, share)
                done.append(step(svc, job_id, volume, live, request, part))
                part(1.0)
        return ChainResult(job_id, request.domain, tuple(done))

    spec = jobrun.JobSpec(operation, request.domain, [v.key for v in chosen], asdict(request))
    return jobrun.run(svc, spec, request.idempotency_key, body, ChainResult.from_dict, on_started)


def _check(svc: Services, operation: str, request: ChainRequest, chosen: list[Volume]) -> bool:
    """True when the domain runs. Refused: a domain neither running nor shut off, a disk
    with someone else's block job or a chain that cannot be read, a flatten that would lose
    kept snapshots unforced."""
    validate.domain_name(request.domain)
    state = svc.host.state(request.domain)[0]
    live = volumes.is_live(state)
    if state not in (DomainState.RUNNING, DomainState.SHUTOFF):
        # A paused guest cannot be paused again to flush a merge to disk (merge.make_durable).
        raise Precondition(
            f"domain {request.domain} is {state}; {operation} it running or shut off",
            reason="DOMAIN_NOT_RUNNING" if live else "DOMAIN_NOT_STOPPED",
        )
    for volume in chosen:
        if live:
            volumes.ensure_no_block_job(svc, volume)
        if volume.kind != VolumeKind.FILE:
            continue
        health = chains.health(svc, volume, live)  # the chain can be read (its images exist)
        if operation == FLATTEN and not request.force:
            lost = [s for layer in _flatten_removes(health) for s in layer.snapshots]
            if lost:
                raise Precondition(
                    f"flattening {volume.key} would delete the layers of snapshots "
                    f"{', '.join(lost)}; delete them first or flatten with force",
                    reason="SNAPSHOTS_WOULD_BE_LOST",
                )
    return live


def _consolidate_volume(
    svc: Services,
    job_id: str,
    volume: Volume,
    live: bool,
    request: ChainRequest,
    progress: Callable[[float], None],
) -> DiskChainResult:
    before = chains.health(svc, volume, live)
    if volume.kind == VolumeKind.RBD:
        note = "RBD snapshots form no chain: nothing to merge (flatten detaches a clone)"
        return DiskChainResult(
            volume.target, volume.location, before.depth, before.depth, note=note
        )
    removed: list[str] = []
    for n, run in enumerate(before.runs):
        jobrun.checkpoint(svc, job_id, f"merging {run.top}")
        started = Merge(volume.target, live, run.top, run.base, list(run.between))
        steps.write(svc.journal, job_id, Step.MERGE, started)
        control = merge.Control(
            job_id,
            request.bandwidth_mib,
            lambda f, n=n: progress((n + f) / len(before.runs)),  # type: ignore[misc]
            cancellable=True,  # the base holds no kept snapshot: an abort harms nothing
            pools=frozenset({stats.pool_of(volume)}),
        )
        active = merge.merge_into_backing(
            svc, volume.domain, volume.target, run.top, run.base, live, control, run.between
        )
        faults.point(faults.Step.AFTER_MERGE)
        steps.write(svc.journal, job_id, Step.MERGED, Merged(volume.target, active))
        merge.forget_merged(
            svc, volume.domain, volume.target, run.top, run.base, active, run.between
        )
        removed += [run.top, *run.between]
    expected = [layer.path for layer in before.layers if layer.path not in removed]
    after = _verified_chain(svc, volume, expected)
    return DiskChainResult(volume.target, after[0], before.depth, len(after), tuple(removed))


def _flatten_removes(health: chains.ChainHealth) -> list[chains.ChainLayer]:
    """The layers below the active image a flatten deletes: the volume's own, from the top
    down, until one that something else still needs (a second branch, a template)."""
    removes = []
    for layer in health.layers[1:]:
        if not layer.own or layer.children != 1:
            break
        removes.append(layer)
    return removes


def _flatten_volume(
    svc: Services,
    job_id: str,
    volume: Volume,
    live: bool,
    request: ChainRequest,
    progress: Callable[[float], None],
) -> DiskChainResult:
    before = chains.health(svc, volume, live)
    if volume.kind == VolumeKind.RBD:
        assert volume.rbd is not None
        if not before.rbd_parents:
            note = "not a clone: nothing to flatten"
            return DiskChainResult(volume.target, volume.location, 1, 1, note=note)
        steps.write(svc.journal, job_id, Step.RBD_FLATTEN, OnDisk(volume.target))
        svc.rbd.flatten(volume.rbd, progress)
        steps.write(svc.journal, job_id, Step.FLATTENED, OnDisk(volume.target))
        depth_after = 1 + len(svc.rbd.parents(volume.rbd))
        return DiskChainResult(
            volume.target, volume.location, before.depth, depth_after, (before.rbd_parents[0],)
        )
    if before.depth == 1:
        return DiskChainResult(volume.target, before.active_image, 1, 1, note="already one image")
    removes = _flatten_removes(before)
    lost = tuple(s for layer in removes for s in layer.snapshots)
    jobrun.checkpoint(svc, job_id, "the flatten")
    flatten = Flatten(volume.target, live, [layer.path for layer in removes], list(lost))
    steps.write(svc.journal, job_id, Step.FLATTEN, flatten)
    if live:
        svc.host.block_pull(volume.domain, volume.target, bandwidth_mib=request.bandwidth_mib)
        wait_pull(svc, volume.domain, volume.target, progress, job_id)
        merge.make_durable(svc, job_id, volume.domain, before.active_image)
    else:
        qemu_img.flatten(before.active_image, progress)
        merge.redefine_offline(svc, volume.domain, volume.target, before.active_image)
    faults.point(faults.Step.AFTER_MERGE)
    steps.write(svc.journal, job_id, Step.FLATTENED, OnDisk(volume.target))
    after = _verified_chain(svc, volume, [before.active_image])
    _finish_flatten(svc, flatten)
    kept = len(before.layers) - 1 - len(removes)
    note = f"{kept} layers below stay: other images still use them" if kept else ""
    return DiskChainResult(
        volume.target,
        after[0],
        before.depth,
        len(after),
        tuple(layer.path for layer in removes),
        lost,
        note,
    )


def _finish_flatten(svc: Services, flatten: Flatten) -> None:
    for snapshot_id in flatten.lost:
        svc.journal.mark_snapshot_deleted(snapshot_id)
    for path in flatten.remove:
        if os.path.exists(path):
            os.unlink(path)
        svc.journal.forget_layer(path)
    svc.publish_layers()


def wait_pull(
    svc: Services,
    domain: str,
    target: str,
    progress: Callable[[float], None],
    job_id: str | None = None,
) -> None:
    """Waits for a block pull to end; a cancel of `job_id` aborts it (the active image then
    still reads its backing files, which are unchanged)."""
    timeout = svc.config.block_job_timeout
    watch = block_jobs.Watch(
        cancelled=lambda: Cancelled(
            "cancelled during the block pull; it was aborted, the chain is as it was"
        ),
        timed_out=lambda: OperationFailed(
            f"block pull on {domain}/{target} did not finish in "
            f"{timeout:.0f} s; aborted, the chain is as it was"
        ),
        cancel_of=job_id,
        progress=progress,
    )
    block_jobs.wait(svc, domain, target, watch, block_jobs.ended)


def _verified_chain(svc: Services, volume: Volume, expected: list[str]) -> list[str]:
    """The disk's chain now, from libvirt and the images, which must be `expected`."""
    domain = volumes.now(svc, volume.domain)
    active = domain.active(volume.target)
    if active is None:
        raise Precondition(
            f"{volume.key}: the domain has no disk {volume.target} any more (detached while "
            "the job ran); its images are left as they are",
            reason="DISK_GONE",
        )
    found = [layer.path for layer in qemu_img.chain(active)]
    if domain.live:
        reported = domain_xml.backing_chain(domain.xml, volume.target)
        if reported != found[: len(reported)]:
            found = reported
    if found != expected:
        raise OperationFailed(
            f"{volume.key}: the chain is {' <- '.join(found)}, expected {' <- '.join(expected)}"
        )
    return found


def recover_consolidate(svc: Services, job: Job) -> tuple[JobState, str]:
    """The merge under way is finished (re-attaching to a live commit QEMU still runs, and
    pivoting it when ready); the job then ends failed, the rest left for a new run."""
    run = steps.read(job, Step.MERGE, Merge)
    if run is None:
        return JobState.FAILED, "it stopped before merging anything"
    if not steps.reached_after(job, Step.MERGED, Step.MERGE):
        bandwidth = job.request.get("bandwidth_mib", 0)
        merge.resume(svc, job.id, job.domain, run.target, run.top, run.base, run.live, bandwidth)
    active = volumes.current_active(svc, job.domain, run.target) or run.base
    between = tuple(run.between)
    merge.forget_merged(svc, job.domain, run.target, run.top, run.base, active, between)
    return JobState.FAILED, f"the merge of {run.top} was finished; consolidate again for the rest"


def recover_flatten(svc: Services, job: Job) -> tuple[JobState, str]:
    if steps.reached(job, Step.RBD_FLATTEN):
        return JobState.FAILED, "an RBD flatten was interrupted; the clone reads as before"
    flatten = steps.read(job, Step.FLATTEN, Flatten)
    if flatten is None:
        return JobState.FAILED, "it stopped before flattening anything"
    target = flatten.target
    if not steps.reached_after(job, Step.FLATTENED, Step.FLATTEN):
        if svc.host.exists(job.domain) and volumes.is_live(svc.host.state(job.domain)[0]):
            wait_pull(svc, job.domain, target, lambda fraction: None)
        domain = volumes.now(svc, job.domain)  # after the pull
        active = domain.active(target)
        if active is None or len(qemu_img.chain(active)) > 1:
            return JobState.FAILED, f"the flatten of {target} did not finish; nothing was removed"
        if domain.live:
            merge.make_durable(svc, job.id, job.domain, active)
        else:
            merge.redefine_offline(svc, job.domain, target, active)
    _finish_flatten(svc, flatten)
    return JobState.FAILED, f"the flatten of {target} was finished; other disks were not flattened"
