"""`hostsnap-controller`: the zone's coordinator (`serve`) and its operators' commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from controller import __version__
from controller.agents import AgentError
from controller.cli import CommandError, fleet, options, policies
from controller.cli import groups as group_commands
from controller.cli import reconcile as reconcile_commands
from controller.cli import snapshots as snapshot_commands
from controller.cloudstack import CloudStackError
from controller.cloudstack.role import CloudStackRoleError, require_root_admin
from controller.config import ConfigError, load
from controller.parts import Parts
from controller.service import Service
from controller.store import StoreError

log = logging.getLogger(__name__)

Command = Callable[[Parts, argparse.Namespace], Awaitable[int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostsnap-controller",
        description="Coordinates the hostsnap agents of a CloudStack zone.",
    )
    parser.add_argument("--version", action="version", version=f"hostsnap-controller {__version__}")
    common = options()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", parents=[common], help="run the controller")
    serve.add_argument("--holder", help="this controller's name in the lease (default: unique)")
    fleet.add_arguments(commands, common)
    policies.add_arguments(commands, common)
    group_commands.add_arguments(commands, common)
    reconcile_commands.add_arguments(commands, common)
    snapshot_commands.add_arguments(commands, common)
    return parser


async def _serve(parts: Parts, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Service(parts, holder=args.holder).run(stop)
    return 0


async def _policies(parts: Parts, args: argparse.Namespace) -> int:
    return policies.policies_command(parts, args)


COMMANDS: dict[str, Command] = {
    "serve": _serve,
    "status": fleet.status_command,
    "hosts": fleet.hosts_command,
    "policies": _policies,
    "plan": policies.plan_command,
    "run": policies.run_command,
    "groups": group_commands.groups_command,
    "reconcile": reconcile_commands.reconcile_command,
    "snapshots": snapshot_commands.snapshots_command,
    "restore": snapshot_commands.restore_command,
}


# Commands that act on what only a root admin's key is shown (`status` reports CloudStack
# unreachable instead, `policies` does not ask it).
ROOT_ADMIN_COMMANDS = frozenset({"serve", "hosts", "plan", "run", "groups", "reconcile", "restore"})


async def _run(command: Command, args: argparse.Namespace) -> int:
    parts = Parts.build(load(args.config))
    try:
        if args.command in ROOT_ADMIN_COMMANDS:
            account = await require_root_admin(parts.cloudstack)
            log.info("CloudStack API key of root admin %s", account)
        return await command(parts, args)
    finally:
        await parts.close()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_run(COMMANDS[args.command], args))
    except ConfigError as e:
        print(f"hostsnap-controller: {e}", file=sys.stderr)
        # EX_CONFIG: the unit's RestartPreventExitStatus=, so systemd does not retry in a loop.
        return os.EX_CONFIG
    except (CommandError, CloudStackRoleError) as e:
        print(f"hostsnap-controller: {e}", file=sys.stderr)
        return 2
    except (StoreError, CloudStackError, AgentError) as e:
        print(f"hostsnap-controller: {e}", file=sys.stderr)
        return 1
