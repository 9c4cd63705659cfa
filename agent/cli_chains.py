"""`hostsnap chain | consolidate | flatten`: backing chains at the host."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from agent.cli_jobs import wait_for
from agent.cli_output import as_json, table
from hostsnap.agent.v1 import agent_pb2 as pb

Command = Callable[[str, Callable[[Any, argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_chain(stub: Any, args: argparse.Namespace) -> int:
    request = pb.GetChainsRequest(domain=args.domain, disks=[args.disk] if args.disk else [])
    found = stub.GetChains(request, timeout=args.timeout)
    if args.json:
        print(as_json(list(found.chains)))
        return 0
    print("\n\n".join(draw(c) for c in found.chains))
    return 1 if any(c.over_limit for c in found.chains) else 0


def draw(chain: Any) -> str:
    """The chain, active image first, each layer on the one below it with its size and kept
    snapshots; `*` marks the layers a consolidation would merge away."""
    limit = f"depth {chain.depth} of at most {chain.max_depth}"
    if chain.over_limit:
        limit += ": OVER THE LIMIT, consolidate or flatten it"
    lines = [f"{chain.target} ({limit})"]
    if chain.kind == pb.VOLUME_KIND_RBD:
        lines.append(f"  rbd {chain.active_image}")
        lines += [f"  └─ clone of {parent}" for parent in chain.rbd_parents]
        return "\n".join(lines)
    merged = {p for run in chain.merge_runs for p in (run.base, *run.between)}
    rows = []
    for depth, layer in enumerate(chain.layers):
        notes = ["active"] if depth == 0 else []
        notes += [f"snapshot {s}" for s in layer.snapshot_ids]
        if not layer.own:
            notes.append("shared, never changed")
        mark = "*" if layer.path in merged else ""
        size = f"{layer.size_on_disk / 2**20:.1f} MiB"
        rows.append((f"{depth}{mark}", layer.path, size, ", ".join(notes)))
    lines.append(table(["#", "layer (each backed by the next)", "on disk", "holds"], rows))
    if chain.mergeable:
        lines.append(f"* {chain.mergeable} layers hold no kept snapshot: consolidate merges them")
    return "\n".join(lines)


def bandwidth(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and {2**32 - 1} MiB/s")
    return value


def _chain_request(args: argparse.Namespace) -> pb.ChainRequest:
    return pb.ChainRequest(
        domain=args.domain,
        disks=args.disk or [],
        bandwidth_mib=args.bandwidth,
        force=getattr(args, "force", False),
        idempotency_key=args.idempotency_key or "",
    )


def cmd_consolidate(stub: Any, args: argparse.Namespace) -> int:
    return wait_for(stub, stub.Consolidate(_chain_request(args), timeout=args.timeout), args)


def cmd_flatten(stub: Any, args: argparse.Namespace) -> int:
    return wait_for(stub, stub.Flatten(_chain_request(args), timeout=args.timeout), args)


def add_commands(command: Command) -> list[argparse.ArgumentParser]:
    """Adds the chain commands; returns those that start jobs."""
    p = command("chain", cmd_chain, "a domain's backing chains: depth against the limit, layers")
    p.add_argument("domain")
    p.add_argument("disk", nargs="?")
    jobs = [
        command(
            "consolidate",
            cmd_consolidate,
            "merge away the layers that hold no kept snapshot (live or offline)",
        ),
        command("flatten", cmd_flatten, "collapse each disk into its active image"),
    ]
    jobs[1].add_argument(
        "--force", action="store_true", help="also when layers of kept snapshots go with it"
    )
    for p in jobs:
        p.add_argument("domain")
        p.add_argument("--disk", action="append", help="a target device (repeatable); default all")
        p.add_argument(
            "--bandwidth",
            type=bandwidth,
            default=0,
            help="MiB/s for a running domain's block jobs (0: unlimited)",
        )
    return jobs
