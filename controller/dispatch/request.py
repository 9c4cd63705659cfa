"""A store job's parameters as an agent request: the domain is the VM's instance name; the
disks are `params["disks"]` (comma-separated targets), or the target of the job's volume as
the agent lists it (its image, or a hostsnap overlay of the same original), or every disk."""

from __future__ import annotations

from dataclasses import dataclass

from controller.agents import QUIESCE, AgentClient
from controller.dispatch.preflight import Target
from controller.reconcile.paths import same_volume
from controller.store import Job


class BadJob(ValueError):
    """The job's parameters cannot make a request; sending it again will not help."""


@dataclass(frozen=True)
class SnapshotRequest:
    domain: str
    disks: tuple[str, ...]
    quiesce: str
    name: str


async def snapshot_request(
    job: Job, target: Target, client: AgentClient, timeout: float
) -> SnapshotRequest:
    quiesce = job.params.get("quiesce", "preferred")
    if quiesce not in QUIESCE:
        raise BadJob(f"job {job.id}: quiesce {quiesce!r} is not one of {', '.join(QUIESCE)}")
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
    return SnapshotRequest(domain, disks, quiesce, job.params.get("name", ""))
