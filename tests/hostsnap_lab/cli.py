"""`hostsnap-lab up|status|down`: the real test stack on this host (root, Debian 12)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import lab
from .paths import DEFAULT_STATE_DIR, STATE_DIR_ENV, LabPaths
from .run import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hostsnap-lab",
        description="Bring up, inspect, demonstrate or remove the hostsnap lab: libvirt, two "
        "TCG guests with qemu-guest-agent (lab-qcow2 on a qcow2 file, lab-rbd on RBD) and a "
        "one-node Ceph cluster on loopback.",
    )
    parser.add_argument(
        "--state-dir",
        help=f"where the lab keeps everything (default ${STATE_DIR_ENV} or {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "command",
        choices=("up", "status", "down", "demo"),
        help="demo: a snapshot, revert and verify cycle on both guests (brings the lab up)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hostsnap-lab: %(message)s")
    if args.state_dir:
        os.environ[STATE_DIR_ENV] = args.state_dir
    if os.geteuid() != 0:
        print("hostsnap-lab: must run as root (it starts libvirtd and Ceph)", file=sys.stderr)
        return 2
    paths = LabPaths.from_env()
    try:
        if args.command == "up":
            lab.up(paths)
            print_status(paths)
        elif args.command == "status":
            print_status(paths)
        elif args.command == "demo":
            from . import demo  # imports the agent, which `up` alone does not need

            demo.run(lab.up(paths))
        else:
            lab.down(paths)
            left = lab.leftover_processes(paths)
            if left:
                print(f"hostsnap-lab: processes still running: {left}", file=sys.stderr)
                return 1
            print("hostsnap-lab: down; nothing of the lab is left")
    except LabError as e:
        print(f"hostsnap-lab: {args.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


def print_status(paths: LabPaths) -> None:
    for component, state in lab.status(paths):
        print(f"{component:<16} {state}")


if __name__ == "__main__":
    sys.exit(main())
