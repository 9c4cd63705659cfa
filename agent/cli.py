"""`hostsnap`: the administrator's command line at the host.

Talks to the local agent over its root-only unix socket, or to a remote agent with
--endpoint and certificates. Tables for people, --json for scripts. Exit codes: 0 done,
1 the job or call failed, 2 bad usage or input, 3 not found, 4 refused in this state (busy,
not stopped, ...), 5 libvirt, the guest agent, Ceph or the agent unreachable, 6 not allowed,
7 out of space.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from agent import __version__, cli_backups, cli_chains
from agent.cli_jobs import EXIT_CODES, enum_name, wait_for
from agent.cli_output import as_json, table
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

DEFAULT_SOCKET = "/run/hostsnap/agent.sock"
DEFAULT_CONFIG = Path("/etc/hostsnap/agent.toml")
QUIESCE = {
    "required": pb.QUIESCE_REQUIRED,
    "preferred": pb.QUIESCE_PREFERRED,
    "none": pb.QUIESCE_NONE,
}


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def connect(args: argparse.Namespace) -> agent_pb2_grpc.AgentServiceStub:
    if args.endpoint:
        if not (args.cert and args.key and args.ca):
            raise UsageError("--endpoint needs --cert, --key and --ca (mutual TLS)")
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(args.ca).read_bytes(),
                private_key=Path(args.key).read_bytes(),
                certificate_chain=Path(args.cert).read_bytes(),
            )
        except OSError as e:
            raise UsageError(f"cannot read a certificate or key: {e}") from e
        channel = grpc.secure_channel(args.endpoint, credentials)
    else:
        channel = grpc.insecure_channel(f"unix:{args.socket or DEFAULT_SOCKET}")
    return agent_pb2_grpc.AgentServiceStub(channel)


# commands


def cmd_status(stub: Any, args: argparse.Namespace) -> int:
    info = stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=args.timeout)
    if args.json:
        print(as_json(info))
        return 0
    rows = [
        ("host", info.hostname),
        ("agent", info.agent_version),
        ("libvirt", info.libvirt_version),
        ("qemu", info.qemu_version),
        ("ceph client", info.ceph_client_version or "not installed"),
        ("running since", info.started_at.ToDatetime().isoformat(timespec="seconds") + "Z"),
    ]
    print(table(["what", "value"], rows))
    return 0


def cmd_domains(stub: Any, args: argparse.Namespace) -> int:
    found = stub.ListDomains(pb.ListDomainsRequest(include_inactive=args.all), timeout=args.timeout)
    if args.json:
        print(as_json(list(found.domains)))
        return 0
    rows = [
        (d.name, enum_name(pb.DomainState, d.state, "DOMAIN_STATE_"), d.uuid) for d in found.domains
    ]
    print(table(["name", "state", "uuid"], rows))
    return 0


def cmd_volumes(stub: Any, args: argparse.Namespace) -> int:
    found = stub.ListVolumes(pb.ListVolumesRequest(domain=args.domain), timeout=args.timeout)
    if args.json:
        print(as_json(list(found.volumes)))
        return 0
    rows = [
        (v.target, enum_name(pb.VolumeKind, v.kind, "VOLUME_KIND_"), v.format, v.location)
        for v in found.volumes
    ]
    print(table(["disk", "kind", "format", "active image"], rows))
    return 0


def _snapshots(stub: Any, args: argparse.Namespace) -> Any:
    disks = [args.disk] if getattr(args, "disk", None) else []
    request = pb.ListSnapshotsRequest(domain=args.domain, disks=disks)
    return stub.ListSnapshots(request, timeout=args.timeout)


def cmd_snapshots(stub: Any, args: argparse.Namespace) -> int:
    found = _snapshots(stub, args)
    if args.json:
        print(as_json(list(found.volumes)))
        return 0
    rows = []
    for volume in found.volumes:
        for s in volume.snapshots:
            rows.append(
                (
                    s.id,
                    s.name,
                    s.target,
                    s.created_at.ToDatetime().isoformat(timespec="seconds") + "Z",
                    enum_name(pb.Consistency, s.consistency, "CONSISTENCY_"),
                    s.chain_position.value if s.HasField("chain_position") else "-",
                    s.content,
                )
            )
    print(table(["id", "name", "disk", "created", "consistency", "pos", "content"], rows))
    return 0


def cmd_snapshot_create(stub: Any, args: argparse.Namespace) -> int:
    request = pb.CreateSnapshotRequest(
        domain=args.domain,
        disks=args.disk or [],
        quiesce=QUIESCE[args.quiesce],
        name=args.name or "",
        idempotency_key=args.idempotency_key or "",
    )
    return wait_for(stub, stub.CreateSnapshot(request, timeout=args.timeout), args)


def cmd_revert(stub: Any, args: argparse.Namespace) -> int:
    request = pb.RevertSnapshotRequest(
        snapshot_id=args.snapshot, idempotency_key=args.idempotency_key or "", stop_domain=args.stop
    )
    return wait_for(stub, stub.RevertSnapshot(request, timeout=args.timeout), args)


def cmd_delete(stub: Any, args: argparse.Namespace) -> int:
    request = pb.DeleteSnapshotRequest(
        snapshot_id=args.snapshot,
        idempotency_key=args.idempotency_key or "",
        defer_merge=args.defer_merge,
    )
    return wait_for(stub, stub.DeleteSnapshot(request, timeout=args.timeout), args)


def cmd_jobs(stub: Any, args: argparse.Namespace) -> int:
    found = stub.ListJobs(
        pb.ListJobsRequest(domain=args.domain or "", limit=args.limit), timeout=args.timeout
    )
    if args.json:
        print(as_json(list(found.jobs)))
        return 0
    rows = [
        (
            j.id,
            j.operation,
            j.domain,
            enum_name(pb.JobState, j.state, "JOB_STATE_"),
            j.created_at.ToDatetime().isoformat(timespec="seconds") + "Z",
            j.error.reason if j.HasField("error") else "",
        )
        for j in found.jobs
    ]
    print(table(["id", "operation", "domain", "state", "created", "error"], rows))
    return 0


def cmd_job(stub: Any, args: argparse.Namespace) -> int:
    job = stub.GetJob(pb.GetJobRequest(job_id=args.job), timeout=args.timeout)
    args.no_wait = not args.watch
    return wait_for(stub, job, args)


def cmd_cancel(stub: Any, args: argparse.Namespace) -> int:
    job = stub.CancelJob(pb.CancelJobRequest(job_id=args.job), timeout=args.timeout)
    args.no_wait = False
    return wait_for(stub, job, args)


def _latency(value: Any) -> str:
    return f"{value.value:.2f}" if value.ByteSize() else "-"


def show_stats(found: Any) -> str:
    def disk_rows(disks: Any) -> list[tuple[Any, ...]]:
        return [
            (
                d.domain,
                d.disk,
                f"{d.read_iops:.1f}",
                f"{d.write_iops:.1f}",
                f"{d.read_bytes_per_second / 2**20:.2f}",
                f"{d.write_bytes_per_second / 2**20:.2f}",
                _latency(d.read_latency_ms),
                _latency(d.write_latency_ms),
            )
            for d in disks
        ]

    headers = ["domain", "disk", "r/s", "w/s", "rMiB/s", "wMiB/s", "r ms", "w ms"]
    parts = [
        f"over {found.interval_seconds:.1f} s",
        table(headers, disk_rows(found.domain_disks)),
        table(["host", *headers[1:]], disk_rows(found.host_devices)),
    ]
    if found.temperatures:
        rows = [
            (
                t.sensor,
                t.label,
                f"{t.celsius:.1f}",
                f"{t.high.value:.0f}" if t.HasField("high") else "-",
                f"{t.critical.value:.0f}" if t.HasField("critical") else "-",
            )
            for t in found.temperatures
        ]
        parts.append(table(["sensor", "label", "°C", "high", "critical"], rows))
    else:
        parts.append("temperatures: this host exposes no temperature sensor")
    return "\n\n".join(parts)


def cmd_stats(stub: Any, args: argparse.Namespace) -> int:
    request = pb.GetStatsRequest(interval_seconds=args.interval)
    if not args.watch:
        found = stub.GetStats(request, timeout=args.timeout + args.interval)
        print(as_json(found) if args.json else show_stats(found))
        return 0
    for found in stub.WatchStats(request):
        print(as_json(found) if args.json else show_stats(found) + "\n", flush=True)
    return 0


def cmd_freeze_status(stub: Any, args: argparse.Namespace) -> int:
    status = stub.GetFreezeStatus(
        pb.GetFreezeStatusRequest(domain=args.domain), timeout=args.timeout
    )
    print(
        as_json(status)
        if args.json
        else f"{status.domain}: {'frozen' if status.frozen else 'thawed'}"
    )
    return 0


def cmd_thaw(stub: Any, args: argparse.Namespace) -> int:
    status = stub.Thaw(pb.ThawRequest(domain=args.domain), timeout=args.timeout)
    print(
        as_json(status)
        if args.json
        else f"{status.domain}: {'frozen' if status.frozen else 'thawed'}"
    )
    return 0 if not status.frozen else 1


def direct(args: argparse.Namespace) -> int:
    from agent.cli_direct import DIRECT_COMMANDS, DirectStub
    from agent.errors import HostsnapError
    from agent.service.status import code_of
    from agent.settings import ConfigError

    if args.command not in DIRECT_COMMANDS:
        print(f"hostsnap: --direct works for {', '.join(DIRECT_COMMANDS)} only", file=sys.stderr)
        return 2
    socket = args.socket or DEFAULT_SOCKET
    if args.command == "revert" and agent_problem(socket) is None:
        print(
            f"hostsnap: the agent answers on {socket}: revert through it (without --direct), "
            "so that its locks keep other jobs off the volume",
            file=sys.stderr,
        )
        return 4
    try:
        return int(args.run(DirectStub(args.config), args))
    except ConfigError as e:
        print(f"hostsnap: configuration error: {e}", file=sys.stderr)
        return 2
    except HostsnapError as e:
        print(f"hostsnap: {e} [{e.reason}]", file=sys.stderr)
        return EXIT_CODES.get(code_of(e), 1)


def agent_problem(socket: str) -> str | None:
    """None when the agent answers on its socket, else why not."""
    try:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(f"unix:{socket}"))
        stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=5)
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"
    return None


def doctor(args: argparse.Namespace) -> int:
    from agent.operations.doctor import Verdict
    from agent.settings import ConfigError, load
    from agent.wiring import run_doctor

    try:
        settings = load(args.config)
    except ConfigError as e:
        print(f"hostsnap: configuration error: {e}", file=sys.stderr)
        return 2
    socket = args.socket or settings.listen.unix_socket
    checks = run_doctor(settings.agent, socket, settings.audit_log, lambda: agent_problem(socket))
    if args.json:
        print(json.dumps([vars(c) for c in checks], indent=2))
    else:
        print(table(["check", "status", "detail"], [(c.name, c.verdict, c.detail) for c in checks]))
    return 1 if any(c.verdict == Verdict.FAILURE for c in checks) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostsnap",
        description="Snapshots of this host's KVM guests: take, list, revert, delete, and "
        "recover when things broke.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hostsnap {__version__}")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--socket", help=f"the local agent ({DEFAULT_SOCKET})")
    parser.add_argument("--endpoint", help="a remote agent, host:port (mutual TLS)")
    parser.add_argument("--cert", help="client certificate (with --endpoint)")
    parser.add_argument("--key", help="client key (with --endpoint)")
    parser.add_argument("--ca", help="CA that signed the agent's certificate (with --endpoint)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (60)")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="without the agent (when it is down): thaw, freeze-status, chain, snapshots, "
        "revert of a stopped domain",
    )
    parser.add_argument(
        "--config", type=Path, help=f"with --direct and doctor (default {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[Any, argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(run=run)
        return p

    command("status", cmd_status, "the agent, its host and the versions it drives")
    command("domains", cmd_domains, "the host's domains").add_argument(
        "--all", action="store_true", help="also those not running"
    )
    command("volumes", cmd_volumes, "a domain's disks").add_argument("domain")
    p = command("snapshots", cmd_snapshots, "a domain's snapshots, newest first")
    p.add_argument("domain")
    p.add_argument("--disk")
    chain_jobs = cli_chains.add_commands(command)
    backup_jobs = cli_backups.add_commands(command)
    snap = sub.add_parser("snapshot", help="take a snapshot").add_subparsers(
        dest="action", required=True
    )
    p = snap.add_parser("create", help="snapshot a domain's disks (all, or --disk)")
    p.set_defaults(run=cmd_snapshot_create)
    p.add_argument("domain")
    p.add_argument("--disk", action="append", help="a target device (repeatable); default all")
    p.add_argument("--quiesce", choices=sorted(QUIESCE), default="preferred")
    p.add_argument("--name")
    for name, run, text in (
        ("revert", cmd_revert, "revert a stopped domain's disk to a snapshot"),
        ("delete", cmd_delete, "delete a snapshot (merging its layer away)"),
    ):
        p = command(name, run, text)
        p.add_argument("snapshot", help="the snapshot id")
    sub.choices["revert"].add_argument(
        "--stop", action="store_true", help="shut the domain down first (destroyed if it hangs)"
    )
    sub.choices["delete"].add_argument(
        "--defer-merge",
        action="store_true",
        help="only forget the snapshot; the next consolidate merges its layer",
    )
    jobs = (snap.choices["create"], sub.choices["revert"], sub.choices["delete"], *chain_jobs)
    for p in (*jobs, *backup_jobs):
        p.add_argument("--idempotency-key", help="the same key returns the same job")
        p.add_argument("--no-wait", action="store_true", help="print the job and return")
    p = command("jobs", cmd_jobs, "the agent's jobs, newest first")
    p.add_argument("--domain")
    p.add_argument("--limit", type=int, default=20)
    p = command("job", cmd_job, "one job")
    p.add_argument("job")
    p.add_argument("--watch", action="store_true", help="follow it to its end")
    p = command("stats", cmd_stats, "disk activity of the domains and the host, temperatures")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per sample (1)")
    p.add_argument("--watch", action="store_true", help="one report per interval until ^C")
    command("cancel", cmd_cancel, "stop a job at its next safe point").add_argument("job")
    command("freeze-status", cmd_freeze_status, "is the guest frozen?").add_argument("domain")
    command("thaw", cmd_thaw, "thaw a guest's filesystems (rescue)").add_argument("domain")
    command(
        "doctor",
        lambda _stub, _args: 0,
        "check this host as the operator guide says (no agent needed)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(cli_backups.rewritten(sys.argv[1:] if argv is None else argv))
    if args.command == "doctor":
        return doctor(args)
    if args.command in cli_backups.LOCAL:
        return int(args.run(None, args))
    if args.direct:
        return direct(args)
    try:
        return int(args.run(connect(args), args))
    except UsageError as e:
        print(f"hostsnap: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        code = e.code()
        reason = dict(e.trailing_metadata() or ()).get("hostsnap-reason", "")
        print(f"hostsnap: {e.details()}" + (f" [{reason}]" if reason else ""), file=sys.stderr)
        if code == grpc.StatusCode.UNAVAILABLE and not args.endpoint:
            print(
                f"hostsnap: is hostsnap-agent running (socket {args.socket or DEFAULT_SOCKET})?",
                file=sys.stderr,
            )
        elif code == grpc.StatusCode.UNAVAILABLE:
            # The agent ends a TLS handshake with a certificate it does not trust before any
            # call, so the client learns no more than a closed connection.
            print(
                f"hostsnap: is hostsnap-agent listening on {args.endpoint}, is --cert signed "
                "by the agent's client CA, and is the agent's certificate signed by --ca?",
                file=sys.stderr,
            )
        return EXIT_CODES.get(code, 1)


if __name__ == "__main__":
    sys.exit(main())
