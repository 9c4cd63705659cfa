"""`reconcile [--fix]`: CloudStack's volume paths against the agents' active images, old
intents and snapshots stuck in transitional states."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from controller import reconcile
from controller.cli import CommandError
from controller.cli.output import as_json, table
from controller.parts import Parts
from controller.store import Lease, default_holder

# Seconds the command holds the lease at most (released at its end): a serving controller
# starting meanwhile leads once it is free.
CLI_LEASE = 300.0


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "reconcile", parents=[common], help="compare CloudStack with the hosts (and fix)"
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="update CloudStack's stale volume paths (only while no controller leads)",
    )


async def reconcile_command(parts: Parts, args: argparse.Namespace) -> int:
    inventory = await parts.inventory.refresh()
    settings = parts.settings.reconcile
    with _lease_for(parts, args.fix) as lease:
        report = await reconcile.reconcile(
            parts.store,
            lease,
            parts.cloudstack,
            inventory,
            parts.agents,
            fix=args.fix,
            intents_after=settings.intents_after,
            transitional_after=settings.transitional_after,
        )
    if args.json:
        print(as_json(report))
    else:
        header, *rows = report.table()
        print(table(header, rows))
        for line in report.problems():
            print(line)
        print("in line" if report.clean else "differences found")
    return 0 if report.clean else 1


@contextlib.contextmanager
def _lease_for(parts: Parts, fix: bool) -> Iterator[Lease | None]:
    """Fixing writes to the store under the lease: taken for the command, and refused while
    a controller leads (its own reconcile pass does the fixing)."""
    if not fix:
        yield None
        return
    config = parts.lease_config()
    lease = parts.store.leases.acquire(
        config.name, f"cli:{default_holder()}", CLI_LEASE, config.margin
    )
    if lease is None:
        info = parts.store.leases.info(config.name)
        holder = info.holder if info is not None and info.holder else "another controller"
        raise CommandError(
            f"controller {holder} leads: it fixes on its reconcile pass; "
            "run `reconcile` without --fix to see the differences"
        )
    try:
        yield lease
    finally:
        parts.store.leases.release(lease)
