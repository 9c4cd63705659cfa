"""`hostsnap-agent`: the per-host gRPC service (served from the service issue on)."""

from __future__ import annotations

import argparse

from agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostsnap-agent",
        description="The hostsnap agent of one KVM host: quiesced qcow2 and RBD snapshots, "
        "revert, delete and chain consolidation, served over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"hostsnap-agent {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("hostsnap-agent: this release does not serve yet; the gRPC service is not built")
    return 1
