"""The `hostsnap-controller` command line: one module per group of commands."""

import argparse
from pathlib import Path


def options(*, nested: bool = False) -> argparse.ArgumentParser:
    """--config and --json, for every command. On a nested action (`policies add`) they
    default to nothing, so that what was given before the action is kept."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS if nested else None,
        help="default /etc/hostsnap/controller.toml",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print JSON",
    )
    return parser


class CommandError(Exception):
    """The command cannot do what was asked; the message says why."""
