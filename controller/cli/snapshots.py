"""`snapshots`: the policies' snapshots and their CloudStack-style states (Creating,
CreatedOnPrimary, BackingUp, BackedUp, Error), newest first."""

from __future__ import annotations

import argparse
from typing import Any

from controller import store
from controller.cli.output import as_json, table, when
from controller.parts import Parts
from controller.runner.snapshot_states import snapshot_states


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    listing = commands.add_parser(
        "snapshots", parents=[common], help="the policies' snapshots and their states"
    )
    listing.add_argument("--vm", help="only this VM's (its id)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


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
