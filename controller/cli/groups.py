"""`groups`: the consistency groups of the configuration, their members as CloudStack shows
them; `groups snapshot NAME` takes one group snapshot."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from controller.agents import AgentError
from controller.cli import CommandError, options
from controller.cli.output import as_json, table
from controller.cloudstack import CloudStackError
from controller.config import GroupSettings
from controller.groups import (
    GroupConfig,
    GroupInterrupted,
    GroupMember,
    GroupRefused,
    GroupResult,
    MemberOutcome,
    snapshot_group,
)
from controller.inventory import InventorySnapshot, VirtualMachine
from controller.parts import Parts
from controller.reconcile.direct import record_snapshot

log = logging.getLogger(__name__)
INTERRUPTED = 130  # the exit status of a group snapshot cut short by SIGINT or SIGTERM


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("groups", parents=[common], help="consistency groups")
    actions = parser.add_subparsers(dest="action")
    snapshot = actions.add_parser(
        "snapshot", parents=[options(nested=True)], help="snapshot a group now"
    )
    snapshot.add_argument("name")


async def groups_command(parts: Parts, args: argparse.Namespace) -> int:
    inventory = await parts.inventory.refresh()
    if args.action == "snapshot":
        return await _snapshot(parts, inventory, parts.settings.group(args.name), args)
    rows: list[dict[str, Any]] = [
        {
            "group": group.name,
            "deadline": group.deadline,
            "members": [_member(inventory, ref) for ref in group.vms],
        }
        for group in parts.settings.groups
    ]
    if args.json:
        print(as_json(rows))
        return 0
    lines = [
        [row["group"], m["vm"], m["instance_name"], m["state"], m["host"], row["deadline"]]
        for row in rows
        for m in row["members"]
    ]
    print(table(["group", "vm", "domain", "state", "host", "deadline"], lines))
    return 0


def find_vm(inventory: InventorySnapshot, ref: str) -> VirtualMachine | None:
    """The one VM `ref` (a CloudStack id, name or instance name) means; None when there is
    none. CommandError when several VMs answer to it."""
    found = inventory.find_vms(ref)
    if len(found) > 1:
        ids = ", ".join(sorted(f"{vm.id} ({vm.instance_name})" for vm in found))
        raise CommandError(
            f"{len(found)} VMs answer to {ref!r}: {ids}; name the VM by its id or instance name"
        )
    return found[0] if found else None


def _member(inventory: InventorySnapshot, ref: str) -> dict[str, str | None]:
    found = inventory.find_vms(ref)
    if len(found) != 1:
        state = "not in CloudStack" if not found else f"ambiguous: {len(found)} VMs"
        return {"vm": ref, "instance_name": None, "state": state, "host": None}
    (vm,) = found
    return {
        "vm": vm.name,
        "instance_name": vm.instance_name,
        "state": vm.state,
        "host": vm.host_name,
    }


def _members(parts: Parts, inventory: InventorySnapshot, group: GroupSettings) -> list[GroupMember]:
    members: list[GroupMember] = []
    named: dict[str, str] = {}  # VM id: the reference that named it
    for ref in group.vms:
        try:
            vm = find_vm(inventory, ref)
        except CommandError as e:
            raise CommandError(f"group {group.name}: {e}") from None
        host = inventory.hosts.get((vm.host_id if vm else None) or "")
        if vm is None or host is None:
            raise CommandError(f"group {group.name}: VM {ref} is not running on a host")
        if vm.id in named:
            raise CommandError(
                f"group {group.name}: {named[vm.id]!r} and {ref!r} are the same VM ({vm.id})"
            )
        named[vm.id] = ref
        members.append(GroupMember(parts.agents.client(host), vm.instance_name, vm_id=vm.id))
    return members


async def _snapshot(
    parts: Parts, inventory: InventorySnapshot, group: GroupSettings, args: argparse.Namespace
) -> int:
    members = _members(parts, inventory, group)
    now = datetime.now(UTC)
    try:
        config = GroupConfig(max_hold=group.max_hold)
    except ValueError as e:
        raise CommandError(f"group {group.name}: {e}") from None

    async def take() -> tuple[GroupResult, bool]:
        try:
            result = await snapshot_group(
                members,
                deadline=time.monotonic() + group.deadline,
                name=f"group-{group.name}-{now:%Y%m%dT%H%M%SZ}",
                inventory=inventory,
                config=config,
            )
        except GroupInterrupted as e:
            return e.result, True
        return result, False

    task = asyncio.ensure_future(take())
    with _signals_cancel(task):
        try:
            result, interrupted = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            print("hostsnap-controller: interrupted before anything was frozen", file=sys.stderr)
            return INTERRUPTED
        except GroupRefused as e:
            raise CommandError(f"group {group.name}: {e}") from None
        except ValueError as e:  # the coordinator's own checks of the members
            raise CommandError(f"group {group.name}: {e}") from None
        # Every member whose snapshot remains runs on its new active image, group taken or
        # not (a snapshot whose removal failed): CloudStack must learn it.
        problems = await _record(parts, inventory, members, result)
    _print(args, group, result, problems, interrupted)
    if interrupted:
        return INTERRUPTED
    return 0 if result.succeeded and not problems else 1


async def _record(
    parts: Parts, inventory: InventorySnapshot, members: list[GroupMember], result: GroupResult
) -> list[str]:
    problems = []
    for member, outcome in zip(members, result.members, strict=True):
        if not _remains(result, outcome):
            continue
        try:
            agent_job = await member.client.get_job(outcome.snapshot_job_id)
            problems += await record_snapshot(
                parts.cloudstack, member.client, inventory, member.vm_id or "", agent_job
            )
        except (AgentError, CloudStackError) as e:
            log.error("recording %s's snapshot in CloudStack: %s", member.domain, e)
            problems.append(f"{member.domain}: job {outcome.snapshot_job_id}: {e}")
    return problems


def _remains(result: GroupResult, outcome: MemberOutcome) -> bool:
    """Whether the member's snapshot still exists after the group."""
    if not outcome.snapshot_job_id:
        return False
    return result.succeeded or bool(outcome.kept_ids)


def _print(
    args: argparse.Namespace,
    group: GroupSettings,
    result: GroupResult,
    problems: list[str],
    interrupted: bool,
) -> None:
    if args.json:
        document = {"result": result, "cloudstack_problems": problems, "interrupted": interrupted}
        print(as_json(document))
        return
    rows = [
        [m.domain, "yes" if m.frozen else "no", _thawed(m.thawed), m.snapshot_state or "-",
         " ".join(m.kept_ids) or "-", "; ".join(m.errors)]
        for m in result.members
    ]  # fmt: skip
    print(table(["domain", "frozen", "thawed", "snapshot", "kept", "errors"], rows))
    verdict = "taken" if result.succeeded else f"failed: {result.error}"
    if interrupted:
        verdict += " (interrupted)"
    print(f"group {group.name} ({result.group_id}): {verdict}")
    for line in problems:
        print(f"CloudStack not told: {line} (reconcile --fix will)")


@contextmanager
def _signals_cancel(task: asyncio.Future[Any]) -> Iterator[None]:
    """SIGINT and SIGTERM cancel only the group (which thaws every member and removes what
    they made before it ends), instead of the whole command with the thaw in it; while
    CloudStack is told what remains, they are refused."""
    loop = asyncio.get_running_loop()

    def interrupted(signum: int) -> None:
        if not task.done():
            print(
                f"hostsnap-controller: {signal.Signals(signum).name}: cancelling the group; "
                "thawing every member and removing what they made",
                file=sys.stderr,
            )
            task.cancel()
        else:
            print(
                "hostsnap-controller: telling CloudStack the members' active images first",
                file=sys.stderr,
            )

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, interrupted, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append((signum, previous))
    try:
        yield
    finally:
        for signum, previous in installed:
            loop.remove_signal_handler(signum)
            if previous is not None:  # else it was not set from Python: left as asyncio's
                signal.signal(signum, previous)


def _thawed(thawed: bool | None) -> str:
    return {True: "yes", False: "MAY BE FROZEN", None: "-"}[thawed]
