"""`hostsnap-agent`: the per-host gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.settings import DEFAULT_PATH, ConfigError, load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostsnap-agent",
        description="The hostsnap agent of one KVM host: quiesced qcow2 and RBD snapshots, "
        "revert and delete, served over gRPC (a root-only unix socket for the local `hostsnap` "
        "CLI, TCP with mutual TLS for the controller).",
    )
    parser.add_argument("--version", action="version", version=f"hostsnap-agent {__version__}")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_PATH, help=f"configuration file ({DEFAULT_PATH})"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load(args.config)
    except ConfigError as e:
        print(f"hostsnap-agent: configuration error: {e}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"hostsnap-agent: {args.config}: configuration is valid")
        return 0
    from agent.service.app import serve  # imports libvirt, which --check-config does not need

    asyncio.run(serve(settings))
    return 0
