"""`hostsnap`: the administrator's command line at the host."""

from __future__ import annotations

import argparse

from agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostsnap",
        description="Snapshots of this host's KVM guests: take, list, revert, delete, "
        "and recover when things broke.",
    )
    parser.add_argument("--version", action="version", version=f"hostsnap {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("hostsnap: no commands in this release yet; see `hostsnap --help`")
    return 1
