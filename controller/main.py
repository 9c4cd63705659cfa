"""`hostsnap-controller`: the zone's coordinator (built in the controller issue)."""

from __future__ import annotations

import argparse

from controller import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hostsnap-controller",
        description="Coordinates the hostsnap agents of a CloudStack zone.",
    )
    parser.add_argument("--version", action="version", version=f"hostsnap-controller {__version__}")
    parser.parse_args(argv)
    print("hostsnap-controller: this release does not coordinate yet")
    return 1
