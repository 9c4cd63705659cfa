"""`groups`: the consistency groups of the configuration, their members as CloudStack shows
them; `groups snapshot NAME` takes one group snapshot."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from controller.cli import CommandError, options
from controller.cli.output import as_json, table
from controller.config import GroupSettings
from controller.groups import GroupMember, GroupRefused, snapshot_group
from controller.inventory import InventorySnapshot, VirtualMachine
from controller.parts import Parts
from controller.reconcile.direct import record_snapshot


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
    """A VM by CloudStack id, name or instance name."""
    for vm in inventory.vms.values():
        if ref in (vm.id, vm.name, vm.instance_name):
            return vm
    return None


def _member(inventory: InventorySnapshot, ref: str) -> dict[str, str | None]:
    vm = find_vm(inventory, ref)
    if vm is None:
        return {"vm": ref, "instance_name": None, "state": "not in CloudStack", "host": None}
    return {
        "vm": vm.name,
        "instance_name": vm.instance_name,
        "state": vm.state,
        "host": vm.host_name,
    }


async def _snapshot(
    parts: Parts, inventory: InventorySnapshot, group: GroupSettings, args: argparse.Namespace
) -> int:
    members = []
    for ref in group.vms:
        vm = find_vm(inventory, ref)
        host = inventory.hosts.get((vm.host_id if vm else None) or "")
        if vm is None or host is None:
            raise CommandError(f"group {group.name}: VM {ref} is not running on a host")
        members.append(GroupMember(parts.agents.client(host), vm.instance_name, vm_id=vm.id))
    now = datetime.now(UTC)
    try:
        result = await snapshot_group(
            members,
            deadline=time.monotonic() + group.deadline,
            name=f"group-{group.name}-{now:%Y%m%dT%H%M%SZ}",
            inventory=inventory,
        )
    except GroupRefused as e:
        raise CommandError(f"group {group.name}: {e}") from None
    problems = []
    if result.succeeded:  # CloudStack must learn the members' new active images
        for member, outcome in zip(members, result.members, strict=True):
            agent_job = await member.client.get_job(outcome.snapshot_job_id)
            problems += await record_snapshot(
                parts.cloudstack, inventory, member.vm_id or "", agent_job
            )
    if args.json:
        print(as_json({"result": result, "cloudstack_problems": problems}))
    else:
        rows = [
            [m.domain, "yes" if m.frozen else "no", _thawed(m.thawed), m.snapshot_state,
             " ".join(m.kept_ids) or "-", "; ".join(m.errors)]
            for m in result.members
        ]  # fmt: skip
        print(table(["domain", "frozen", "thawed", "snapshot", "kept", "errors"], rows))
        verdict = "taken" if result.succeeded else f"failed: {result.error}"
        print(f"group {group.name} ({result.group_id}): {verdict}")
        for line in problems:
            print(f"CloudStack not told: {line} (reconcile --fix will)")
    return 0 if result.succeeded and not problems else 1


def _thawed(thawed: bool | None) -> str:
    return {True: "yes", False: "MAY BE FROZEN", None: "-"}[thawed]
