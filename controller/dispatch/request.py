"""A store job's parameters as an agent request: the domain is the VM's instance name; the
disks are `params["disks"]` (comma-separated targets), or the target of the job's volume as
the agent lists it (its image, or a hostsnap overlay of the same original), or every disk.

A VM CloudStack shows Stopped has no libvirt domain on any host (CloudStack starts KVM VMs
as transient domains): its volumes, all on RBD (preflight sends no other stopped VM), are
named as images instead, "<pool path>/<volume path>" (the pool's `path` is the Ceph pool,
the volume's `path` the image), and any host preflight chose snapshots them."""

from __future__ import annotations

from dataclasses import dataclass

from controller.agents import QUIESCE, AgentClient, AgentError
from controller.dispatch.preflight import STOPPED_STATES, Target
from controller.reconcile.paths import same_volume
from controller.store import Job


class BadJob(ValueError):
    """The job's parameters cannot make a request; sending it again will not help."""


class PoolsUnknown(AgentError):
    """A stopped VM's job without its volumes' pools (adopted in flight by a new leader): it
    is sent again once preflight has looked them up."""

    transient = True


@dataclass(frozen=True)
class SnapshotRequest:
    domain: str
    disks: tuple[str, ...]
    quiesce: str
    name: str
    # A stopped VM's volumes as RBD images ("pool/image"), instead of domain and disks.
    rbd_images: tuple[str, ...] = ()


async def snapshot_request(
    job: Job, target: Target, client: AgentClient, timeout: float
) -> SnapshotRequest:
    quiesce = job.params.get("quiesce", "preferred")
    if quiesce not in QUIESCE:
        raise BadJob(f"job {job.id}: quiesce {quiesce!r} is not one of {', '.join(QUIESCE)}")
    name = job.params.get("name", "")
    if target.vm.state in STOPPED_STATES:
        return SnapshotRequest("", (), quiesce, name, rbd_images(job, target))
    domain = target.vm.instance_name
    disks = tuple(d for d in job.params.get("disks", "").split(",") if d)
    if not disks and job.volume_id is not None:
        (volume,) = target.volumes
        path = volume.path or ""
        found = [
            v.target
            for v in await client.list_volumes(domain, timeout=timeout)
            if path and same_volume(v.location, path)
        ]
        if len(found) != 1:
            raise BadJob(f"volume {volume.id} (path {path!r}) is not one disk of {domain}")
        disks = (found[0],)
    return SnapshotRequest(domain, disks, quiesce, name)


def rbd_images(job: Job, target: Target) -> tuple[str, ...]:
    """The stopped VM's volumes (the job's one, or all) as "pool/image"."""
    if job.params.get("disks"):
        raise BadJob(
            f"job {job.id}: VM {target.vm.name} is stopped: it has no disk targets, only volumes"
        )
    pools = {p.id: p for p in target.pools}
    images = []
    for volume in target.volumes:
        pool = pools.get(volume.pool_id or "")
        if pool is None:
            raise PoolsUnknown(
                f"job {job.id}: the pool of volume {volume.name or volume.id} of stopped VM "
                f"{target.vm.name} is not known yet; sent again after the next check"
            )
        if not pool.is_rbd or not pool.path or not volume.path:
            raise BadJob(
                f"job {job.id}: volume {volume.name or volume.id} of stopped VM "
                f"{target.vm.name} is not an RBD image (pool {pool.name} is {pool.type}, "
                f"path {volume.path!r})"
            )
        images.append(f"{pool.path}/{volume.path}")
    return tuple(images)
