"""`hostsnap-agent`: the per-host gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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
        "--config", type=Path, help=f"configuration file (default {DEFAULT_PATH}, if present)"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text or as JSON objects (time, level, logger, message)",
    )
    return parser


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        settings = load(args.config)
    except ConfigError as e:
        print(f"hostsnap-agent: configuration error: {e}", file=sys.stderr)
        # EX_CONFIG: the unit's RestartPreventExitStatus=, so systemd does not retry in a loop.
        return os.EX_CONFIG
    if args.check_config:
        print(f"hostsnap-agent: {args.config or DEFAULT_PATH}: configuration is valid")
        return 0
    from agent.service.app import serve  # imports libvirt, which --check-config does not need

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
