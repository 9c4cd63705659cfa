"""A volume restored from a backup through an agent that reaches the backup's target: the
first Up and Enabled host (by name) whose agent lists the backup. In place only for an RBD
volume (a file volume's new active image would not be CloudStack's path), and only while
CloudStack shows the VM Stopped and its volumes not busy: CloudStack must not start it on a
volume being rewritten (the agent also refuses a domain that runs, or an RBD image some
client has open, and holds the image's lock while it writes)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from controller.agents import AgentBackup, AgentError, AgentJob, AgentPool
from controller.dispatch.follow import follow
from controller.dispatch.preflight import STOPPED_STATES
from controller.inventory import Host, InventorySnapshot, VirtualMachine

log = logging.getLogger(__name__)


class RestoreRefused(Exception):
    """The restore was not started; why."""


@dataclass(frozen=True)
class Restored:
    host: str
    job: AgentJob  # the agent's, at its end (or as last seen at the deadline)


async def restore(
    inventory: InventorySnapshot,
    agents: AgentPool,
    backup_id: str,
    target: str,
    *,
    to: str = "",
    in_place: bool = False,
    timeout: float = 3600.0,
) -> Restored:
    host, backup = await _host_with(inventory, agents, backup_id, target)
    if in_place:
        if backup.kind != "rbd":
            raise RestoreRefused(
                f"backup {backup_id} is of a file volume: in place, its new active image would"
                " not be CloudStack's path; restore it to a new image (--to) instead"
            )
        vm = inventory.vm_by_instance_name(backup.volume.partition("/")[0])
        _check_stopped(inventory, vm, backup.volume)
    agent = agents.client(host)
    started = await agent.restore_backup(
        backup_id, target, idempotency_key=uuid.uuid4().hex, to=to, in_place=in_place
    )
    log.info("restore of %s: agent job %s on %s", backup_id, started.id, host.name)
    ended = await follow(
        agent,
        started,
        deadline=time.monotonic() + timeout,
        clock=time.monotonic,
        sleep=asyncio.sleep,
        backoff=lambda attempt: min(30.0, 2.0**attempt),
    )
    return Restored(host.name, ended)


async def _host_with(
    inventory: InventorySnapshot, agents: AgentPool, backup_id: str, target: str
) -> tuple[Host, AgentBackup]:
    """The host to restore through, and the backup as its agent lists it."""
    tried = []
    for host in sorted((h for h in inventory.hosts.values() if h.usable), key=lambda h: h.name):
        try:
            listed = await agents.client(host).list_backups(target)
        except AgentError as e:
            tried.append(f"{host.name}: {e}")
            continue
        for backup in listed:
            if backup.id == backup_id:
                return host, backup
        tried.append(f"{host.name}: not on {target}")
    raise RestoreRefused(
        f"no Up and Enabled host's agent lists backup {backup_id} on target {target}: "
        + ("; ".join(tried) or "no such host")
    )


def _check_stopped(inventory: InventorySnapshot, vm: VirtualMachine | None, volume: str) -> None:
    if vm is None:
        raise RestoreRefused(f"the VM of {volume} is not in CloudStack's inventory")
    if vm.state not in STOPPED_STATES:
        raise RestoreRefused(
            f"VM {vm.name} is {vm.state} in CloudStack: stop it to restore in place"
        )
    busy = [v for v in inventory.volumes_of(vm.id) if v.busy]
    if busy:
        names = ", ".join(f"{v.name or v.id} is {v.state}" for v in busy)
        raise RestoreRefused(f"volume busy in CloudStack: {names}")
