"""`snapshots`: the policies' snapshots and their CloudStack-style states (Creating,
CreatedOnPrimary, BackingUp, BackedUp, Error), newest first. `restore`: a volume rebuilt
from a backup through an agent that reaches its target."""

from __future__ import annotations

import argparse
from typing import Any

from controller import store
from controller.agents import AgentJobState
from controller.cli import CommandError
from controller.cli.output import as_json, table, when
from controller.parts import Parts
from controller.runner import restore
from controller.runner.snapshot_states import snapshot_states


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    listing = commands.add_parser(
        "snapshots", parents=[common], help="the policies' snapshots and their states"
    )
    listing.add_argument("--vm", help="only this VM's (its id)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    restoring = commands.add_parser(
        "restore", parents=[common], help="rebuild a volume from a backup through an agent"
    )
    restoring.add_argument("backup", help="the backup id (hostsnap backups)")
    restoring.add_argument("--target", required=True, help="the agents' backup target")
    onto = restoring.add_mutually_exclusive_group(required=True)
    onto.add_argument("--to", help="a new image: /path/new.qcow2 or pool/image")
    onto.add_argument(
        "--in-place", action="store_true", help="onto its own volume (the VM must be Stopped)"
    )
    restoring.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")


async def snapshots_command(parts: Parts, args: argparse.Namespace) -> int:
    kinds = (store.JobKind.SNAPSHOT, store.JobKind.BACKUP)
    found = snapshot_states(parts.store.jobs.find(kinds=kinds))
    chosen = [s for s in reversed(found) if args.vm is None or s.vm_id == args.vm][: args.limit]
    if args.json:
        print(as_json(chosen))
        return 0
    rows = [
        [
            s.name,
            s.vm_id or "-",
            s.volume_id or "all",
            when(s.created_at),
            s.state.value,
            s.backup_target or "-",
            s.error,
        ]
        for s in chosen
    ]
    print(table(["name", "vm", "volume", "created", "state", "backup", "error"], rows))
    return 0


async def restore_command(parts: Parts, args: argparse.Namespace) -> int:
    inventory = await parts.inventory.refresh()
    try:
        done = await restore.restore(
            inventory, parts.agents, args.backup, args.target,
            to=args.to or "", in_place=args.in_place, timeout=args.timeout,
        )  # fmt: skip
    except restore.RestoreRefused as e:
        raise CommandError(str(e)) from None
    job = done.job
    if args.json:
        print(as_json({"host": done.host, "job": job}))
    elif job.state is AgentJobState.SUCCEEDED:
        print(f"backup {args.backup} restored to {job.restored_to} through {done.host}")
    else:
        print(f"restore through {done.host}: {job.state.value}: {job.error}")
    return 0 if job.state is AgentJobState.SUCCEEDED else 1
