"""A domain's volumes, their chains and the checks before a job may touch them."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent import validate
from agent.errors import Capacity, Conflict, InvalidArgument, NotFound, Precondition
from agent.hypervisor import domain_xml, qemu_img
from agent.model import DomainState, Layer, RbdSource, Volume, VolumeKind
from agent.operations.services import Services

LIVE_STATES = (DomainState.RUNNING, DomainState.PAUSED, DomainState.BLOCKED)
OVERLAY_SUFFIX = re.compile(r"\.hostsnap-[0-9a-f]{32}$")


@dataclass(frozen=True)
class DomainNow:
    """A domain as libvirt showed it at one moment: its state and its XML (the running
    configuration when live, the definition otherwise). A phase reads it once and passes it
    down; after a side effect on the domain (a switch, a merge) it is read again."""

    name: str
    state: DomainState
    xml: str

    @property
    def live(self) -> bool:
        return is_live(self.state)

    def volumes(self) -> list[Volume]:
        return domain_xml.volumes(self.name, self.xml)

    def volume(self, target: str) -> Volume:
        """One disk (NotFound when the domain has none of that target)."""
        return select(self.volumes(), (target,))[0]

    def active(self, target: str) -> str | None:
        """The image a file disk uses: the running chain's top, or the definition's source."""
        return {v.target: v.path for v in self.volumes()}.get(target)


def now(svc: Services, domain: str, state: DomainState | None = None) -> DomainNow:
    """The domain as it is now (its state as just read, when given: then only its XML)."""
    if state is None:
        state = svc.host.state(domain)[0]
    return DomainNow(domain, state, svc.host.xml(domain, inactive=not is_live(state)))


def read_domain(svc: Services, domain: str) -> DomainNow:
    """A requested domain as it is now (NotFound for an unknown one)."""
    _require_domain(svc, domain)
    return now(svc, domain)


def domain_volumes(svc: Services, domain: str) -> list[Volume]:
    _require_domain(svc, domain)
    return domain_xml.volumes(domain, svc.host.xml(domain))


def _require_domain(svc: Services, domain: str) -> None:
    validate.domain_name(domain)
    if not svc.host.exists(domain):
        raise NotFound(f"no domain named {domain!r} on this host", reason="DOMAIN_NOT_FOUND")


def of_target(svc: Services, domain: str, target: str) -> Volume:
    """One disk of a domain as libvirt has it now."""
    return select(domain_xml.volumes(domain, svc.host.xml(domain)), (target,))[0]


def rbd_source(svc: Services, domain: str, target: str) -> RbdSource:
    source = of_target(svc, domain, target).rbd
    if source is None:
        raise Precondition(f"disk {target} of {domain} is not on RBD now", reason="NOT_RBD")
    return source


def select(volumes: list[Volume], disks: tuple[str, ...]) -> list[Volume]:
    """The requested disks (all when none are named), each checked to exist."""
    if not disks:
        return volumes
    by_target = {v.target: v for v in volumes}
    chosen = []
    for disk in disks:
        validate.disk_target(disk)
        if disk not in by_target:
            known = ", ".join(sorted(by_target)) or "none"
            raise NotFound(f"the domain has no disk {disk!r} (its disks: {known})")
        chosen.append(by_target[disk])
    return chosen


def is_live(state: DomainState) -> bool:
    return state in LIVE_STATES


def current_active(svc: Services, domain: str, target: str) -> str | None:
    """The image a file disk uses now: the running chain's top, or the definition's source."""
    return now(svc, domain).active(target)


def file_chain(svc: Services, volume: Volume, live: bool) -> list[Layer]:
    """The backing chain of a file disk, active first. For a running domain the chain libvirt
    reports is the truth; qemu-img -U adds sizes and must agree with it."""
    assert volume.path is not None
    layers = qemu_img.chain(volume.path)
    if live:
        reported = domain_xml.backing_chain(svc.host.xml(volume.domain), volume.target)
        if reported and reported != [layer.path for layer in layers][: len(reported)]:
            raise Precondition(
                f"{volume.key}: libvirt reports the chain {reported} but the images say "
                f"{[layer.path for layer in layers]}; resolve this before snapshotting"
            )
    return layers


def overlay_path(active: str, snapshot_id: str) -> str:
    """The agent's name for a new overlay: the volume's original file name, then the id.
    `/pool/vol.qcow2.hostsnap-<id1>` + id2 -> `/pool/vol.qcow2.hostsnap-<id2>`."""
    path = Path(active)
    return str(path.with_name(OVERLAY_SUFFIX.sub("", path.name) + f".hostsnap-{snapshot_id}"))


def ensure_no_block_job(svc: Services, volume: Volume) -> None:
    job = svc.host.block_job(volume.domain, volume.target)
    if job:
        raise Conflict(
            f"volume {volume.key} has a libvirt block job running (type {job.get('type')}, "
            f"{job.get('cur')}/{job.get('end')}); wait for it or abort it with "
            f"`virsh blockjob {volume.domain} {volume.target} --abort`",
            reason="BLOCK_JOB_RUNNING",
        )


def check_file_pools(svc: Services, volumes: list[Volume]) -> None:
    """Each file pool directory is writable and keeps the configured headroom free for the
    overlays (a fraction of the disks' virtual size)."""
    needed: dict[str, int] = {}
    for volume in volumes:
        if volume.kind != VolumeKind.FILE:
            continue
        if volume.format not in ("qcow2", "raw"):
            raise InvalidArgument(f"{volume.key}: format {volume.format} is not supported")
        assert volume.path is not None
        directory = str(Path(volume.path).parent)
        size = qemu_img.info(volume.path).virtual_size
        needed[directory] = needed.get(directory, 0) + int(size * svc.config.pool_headroom)
    for directory, need in needed.items():
        if not os.access(directory, os.W_OK) or os.statvfs(directory).f_flag & os.ST_RDONLY:
            raise Precondition(
                f"pool directory {directory} is not writable", reason="POOL_READONLY"
            )
        free = shutil.disk_usage(directory).free
        if free < need:
            raise Capacity(
                f"Storage Provider Error (530): pool {directory} has {free} bytes free, the "
                f"snapshot needs a headroom of {need} bytes "
                f"({svc.config.pool_headroom:.0%} of the disks' size); free space first"
            )
