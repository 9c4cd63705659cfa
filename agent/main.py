"""`hostsnap-agent`: the per-host gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
from pathlib import Path

from agent import __version__
from agent.settings import DEFAULT_PATH, ConfigError, load


def seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of seconds")
    return value


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
        "--drain",
        action="store_true",
        help="ask the agent running here to start no new job, wait until its jobs have ended "
        "(or --timeout), and exit: 0 drained or no agent running, 1 not drained; the packages "
        "run it before they restart the agent",
    )
    parser.add_argument(
        "--thaw-after-exit",
        action="store_true",
        help="thaw the guests the journal says the agent froze and did not thaw, and exit; "
        "refused while an agent runs with this state directory. The unit's ExecStopPost= runs "
        "it, so a guest is not left frozen after the agent died (SIGKILL included)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="with --drain: how long to wait ([limits] drain_timeout, 1800 by default)",
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
    if args.drain:
        from agent import drain

        if not settings.listen.unix_socket:
            print("hostsnap-agent: --drain needs [listen] unix_socket", file=sys.stderr)
            return drain.NOT_DRAINED
        timeout = settings.limits.drain_timeout if args.timeout is None else args.timeout
        return drain.drain(drain.connect(settings.listen.unix_socket), timeout)
    if args.thaw_after_exit:
        from agent import thaw_after_exit

        return thaw_after_exit.run(settings.agent)
    if args.check_config:
        print(f"hostsnap-agent: {args.config or DEFAULT_PATH}: configuration is valid")
        return 0
    from agent.service.app import serve  # imports libvirt, which --check-config does not need
    from agent.thaw_after_exit import AgentRunning

    try:
        asyncio.run(serve(settings))
    except AgentRunning as e:
        print(f"hostsnap-agent: not starting: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
