"""How the `hostsnap` CLI follows a job to its end and tells what it did."""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from agent.cli_output import as_json, end_progress, progress
from hostsnap.agent.v1 import agent_pb2 as pb

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.ABORTED: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.PERMISSION_DENIED: 6,
    grpc.StatusCode.UNAUTHENTICATED: 6,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 7,
}


def enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def wait_for(stub: Any, job: Any, args: argparse.Namespace) -> int:
    """Follows a job to its end, printing its steps; prints the result."""
    if not args.no_wait:
        for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
            job = update
            if not args.json:
                step = job.steps[-1] if job.steps else "queued"
                progress(f"job {job.id} {job.operation}: {step} ({job.progress:.0%})")
        if not args.json:
            end_progress()
    if args.json:
        print(as_json(job))
    else:
        print(describe(job))
    if job.state == pb.JOB_STATE_FAILED:
        return EXIT_CODES.get(getattr(grpc.StatusCode, job.error.code, None), 1)
    if job.state == pb.JOB_STATE_CANCELLED:
        return 0 if args.command == "cancel" else 1
    return 0


def describe(job: Any) -> str:
    state = enum_name(pb.JobState, job.state, "JOB_STATE_")
    lines = [f"job {job.id}: {job.operation} of {job.domain} {state}"]
    if job.HasField("snapshot"):
        r = job.snapshot
        consistency = enum_name(pb.Consistency, r.consistency, "CONSISTENCY_")
        lines.append(f"  {consistency}-consistent, guest frozen {1000 * r.frozen_seconds:.0f} ms")
        if r.quiesce_note:
            lines.append(f"  note: {r.quiesce_note}")
        for d in r.disks:
            how = f" ({d.method})" if d.method else ""
            lines.append(
                f"  {d.target}: snapshot {d.snapshot_id}{how}; active image {d.active_image}"
            )
    elif job.HasField("revert"):
        lines.append(f"  {job.revert.target}: active image {job.revert.active_image}")
    elif job.HasField("delete"):
        lines.append(f"  {job.delete.target}: active image {job.delete.active_image}")
    elif job.HasField("chain"):
        for d in job.chain.disks:
            lines.append(
                f"  {d.target}: depth {d.depth_before} -> {d.depth_after}; "
                f"active image {d.active_image}"
            )
            if d.snapshots_lost:
                lines.append(f"    snapshots lost: {', '.join(d.snapshots_lost)}")
            if d.note:
                lines.append(f"    note: {d.note}")
    elif job.HasField("backup"):
        b = job.backup
        over = f"over backup {b.parent_id}" if b.parent_id else "full"
        lines.append(f"  backup {b.id} of snapshot {b.snapshot_id} on {b.target} ({over})")
        lines.append(
            f"  {b.data_bytes / 2**20:.1f} MiB of data read, {b.stored_bytes / 2**20:.1f} MiB "
            f"stored; read back and matched (SHA-256 {b.sha256})"
        )
    elif job.HasField("restore"):
        r = job.restore
        lines.append(f"  restored to {r.to} from {r.backups_applied} backup(s)")
    elif job.HasField("verify"):
        v = job.verify
        lines.append(f"  {v.backups_read} backup(s) read back and matched")
    elif job.HasField("backup_delete"):
        lines.append(f"  removed: {', '.join(job.backup_delete.removed_ids)}")
    if job.HasField("error"):
        lines.append(f"  error ({job.error.code}, {job.error.reason}): {job.error.message}")
    return "\n".join(lines)
