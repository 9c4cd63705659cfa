"""Between the agent's own types and the protobuf messages of hostsnap.agent.v1."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2, wrappers_pb2

from agent import admission, errors, steps
from agent.errors import InvalidArgument
from agent.jobs import Job, JobState
from agent.model import (
    Consistency,
    DomainState,
    GroupHoldStatus,
    Quiesce,
    VolumeKind,
    VolumeSnapshots,
)
from agent.operations.chains import ChainHealth
from agent.operations.consolidate import ChainRequest
from agent.operations.stats import HostStats
from agent.service import status
from agent.telemetry import DiskRate
from hostsnap.agent.v1 import agent_pb2 as pb

QUIESCE = {
    pb.QUIESCE_UNSPECIFIED: Quiesce.PREFERRED,
    pb.QUIESCE_REQUIRED: Quiesce.REQUIRED,
    pb.QUIESCE_PREFERRED: Quiesce.PREFERRED,
    pb.QUIESCE_NONE: Quiesce.NONE,
}
KIND = {VolumeKind.FILE: pb.VOLUME_KIND_FILE, VolumeKind.RBD: pb.VOLUME_KIND_RBD}
CONSISTENCY = {
    Consistency.APPLICATION: pb.CONSISTENCY_APPLICATION,
    Consistency.CRASH: pb.CONSISTENCY_CRASH,
    Consistency.UNKNOWN: pb.CONSISTENCY_UNKNOWN,
}
JOB_STATE = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
DOMAIN_STATE = {
    DomainState.RUNNING: pb.DOMAIN_STATE_RUNNING,
    DomainState.BLOCKED: pb.DOMAIN_STATE_BLOCKED,
    DomainState.PAUSED: pb.DOMAIN_STATE_PAUSED,
    DomainState.SHUTDOWN: pb.DOMAIN_STATE_SHUTDOWN,
    DomainState.SHUTOFF: pb.DOMAIN_STATE_SHUTOFF,
    DomainState.CRASHED: pb.DOMAIN_STATE_CRASHED,
    DomainState.PMSUSPENDED: pb.DOMAIN_STATE_PMSUSPENDED,
    DomainState.UNKNOWN: pb.DOMAIN_STATE_UNSPECIFIED,
}
MAX_KEY = 128


def quiesce(value: int) -> Quiesce:
    if value not in QUIESCE:
        raise InvalidArgument(f"quiesce {value} is not one of {sorted(QUIESCE)}")
    return QUIESCE[value]


def job_state(value: int) -> JobState | None:
    if value == pb.JOB_STATE_UNSPECIFIED:
        return None
    for state, number in JOB_STATE.items():
        if number == value:
            return state
    raise InvalidArgument(f"job state {value} is not a JobState")


def idempotency_key(value: str) -> str | None:
    if len(value) > MAX_KEY:
        raise InvalidArgument(f"an idempotency key has at most {MAX_KEY} characters")
    return value or None


def chain_request(request: pb.ChainRequest) -> ChainRequest:
    return ChainRequest(
        request.domain,
        tuple(request.disks),
        request.bandwidth_mib,
        request.force,
        idempotency_key(request.idempotency_key),
    )


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def group_freeze(held: GroupHoldStatus) -> pb.GroupFreeze:
    return pb.GroupFreeze(
        domain=held.domain,
        group_id=held.group_id,
        job_id=held.job_id,
        frozen=held.frozen,
        held_until=timestamp(held.held_until),
        remaining_seconds=held.remaining_seconds,
        filesystems=held.filesystems,
    )


def volume_snapshots(found: VolumeSnapshots) -> pb.VolumeSnapshots:
    v = found.volume
    message = pb.VolumeSnapshots(
        volume=pb.Volume(
            domain=v.domain,
            target=v.target,
            kind=KIND[v.kind],
            format=v.format,
            location=found.active_image,
        ),
        chain=[
            pb.Layer(
                path=layer.path,
                format=layer.format,
                virtual_size=layer.virtual_size,
                actual_size=layer.actual_size,
            )
            for layer in found.chain
        ],
    )
    for s in found.snapshots:
        snap = message.snapshots.add(
            id=s.id,
            name=s.name,
            domain=s.domain,
            target=s.target,
            kind=KIND[s.kind],
            created_at=timestamp(s.created),
            consistency=CONSISTENCY[s.consistency],
            content=s.content,
            protected=s.protected,
        )
        if s.size_on_disk is not None:
            snap.size_on_disk.CopyFrom(wrappers_pb2.Int64Value(value=s.size_on_disk))
        if s.chain_position is not None:
            snap.chain_position.CopyFrom(wrappers_pb2.Int32Value(value=s.chain_position))
    return message


def chain(found: ChainHealth) -> pb.Chain:
    return pb.Chain(
        target=found.volume.target,
        kind=KIND[found.volume.kind],
        active_image=found.active_image,
        depth=found.depth,
        max_depth=found.max_depth,
        over_limit=found.over_limit,
        layers=[
            pb.ChainLayer(
                path=layer.path,
                size_on_disk=layer.size_on_disk,
                snapshot_ids=layer.snapshots,
                own=layer.own,
                children=layer.children,
            )
            for layer in found.layers
        ],
        rbd_parents=found.rbd_parents,
        merge_runs=[pb.MergeRun(top=r.top, base=r.base, between=r.between) for r in found.runs],
        mergeable=found.mergeable,
    )


def _double(value: float | None) -> wrappers_pb2.DoubleValue | None:
    return None if value is None else wrappers_pb2.DoubleValue(value=value)


def disk_stats(rate: DiskRate) -> pb.DiskStats:
    return pb.DiskStats(
        domain=rate.domain,
        disk=rate.disk,
        read_iops=rate.read_iops,
        write_iops=rate.write_iops,
        read_bytes_per_second=rate.read_bytes_per_second,
        write_bytes_per_second=rate.write_bytes_per_second,
        read_latency_ms=_double(rate.read_latency_ms),
        write_latency_ms=_double(rate.write_latency_ms),
    )


def host_stats(found: HostStats) -> pb.Stats:
    return pb.Stats(
        taken_at=timestamp(found.taken_at),
        interval_seconds=found.interval,
        domain_disks=[disk_stats(r) for r in found.domain_disks],
        host_devices=[disk_stats(r) for r in found.host_devices],
        temperatures=[
            pb.TemperatureReading(
                sensor=t.sensor,
                label=t.label,
                celsius=t.celsius,
                high=_double(t.high),
                critical=_double(t.critical),
            )
            for t in found.temperatures
        ],
    )


def job(record: Job) -> pb.Job:
    message = pb.Job(
        id=record.id,
        operation=record.operation,
        state=JOB_STATE[record.state],
        domain=record.domain,
        progress=record.progress if record.state == JobState.RUNNING else 1.0,
        created_at=timestamp(record.created),
        updated_at=timestamp(record.updated),
        idempotency_key=record.idempotency_key or "",
        steps=[s.name for s in record.steps],
    )
    if record.result is not None:
        _result(message, record.operation, record.result)
    if record.state in (JobState.FAILED, JobState.CANCELLED):
        refused = steps.read(record, admission.Step.ADMISSION_REFUSED, admission.AdmissionRefused)
        error_class = errors.by_name(record.error_type)
        message.error.CopyFrom(
            pb.JobError(
                code=status.code_of(error_class("")).name,
                reason=record.error_reason or "",
                message=record.error or "",
                retry_after_seconds=refused.retry_after if refused else 0.0,
            )
        )
    return message


def backup(made: dict[str, Any], target: str) -> pb.Backup:
    """A backup (as a catalog.Backup's fields) on the wire."""
    return pb.Backup(
        id=made["id"],
        volume=made["volume"],
        image=made["image"],
        kind=KIND[VolumeKind(made["kind"])],
        snapshot_id=made["snapshot_id"],
        snapshot_name=made["snapshot_name"],
        parent_id=made["parent"],
        size_bytes=made["size"],
        sha256=made["sha256"],
        stream_bytes=made["stream_bytes"],
        data_bytes=made["data_bytes"],
        stored_bytes=made["stored_bytes"],
        taken_at=timestamp(made["taken"]),
        backed_up_at=timestamp(made["backed_up"]),
        host=made["host"],
        target=target,
    )


def _backup_result(message: pb.Job, operation: str, result: dict[str, Any]) -> bool:
    """The result of a backup job kind; False for another kind."""
    if operation == "backup":
        message.backup.CopyFrom(backup(result["backup"], result["target"]))
    elif operation in ("restore", "restore-in-place"):
        message.restore.CopyFrom(
            pb.RestoreResult(
                backup_id=result["backup_id"],
                to=result["to"],
                size_bytes=result["size"],
                backups_applied=result["backups_applied"],
                data_bytes=result["data_bytes"],
                kept_snapshot_id=result.get("kept_snapshot_id", ""),
                replaced_image=result.get("replaced_image", ""),
            )
        )
    elif operation == "backup-verify":
        message.verify.CopyFrom(
            pb.VerifyResult(
                backup_id=result["backup_id"],
                backups_read=result["backups_read"],
                stream_bytes=result["stream_bytes"],
            )
        )
    elif operation == "backup-delete":
        message.backup_delete.CopyFrom(pb.BackupDeleteResult(removed_ids=result["removed_ids"]))
    else:
        return False
    return True


def _result(message: pb.Job, operation: str, result: dict[str, Any]) -> None:
    if _backup_result(message, operation, result):
        return
    if operation == "snapshot":
        message.snapshot.CopyFrom(
            pb.SnapshotResult(
                consistency=CONSISTENCY[Consistency(result["consistency"])],
                frozen_seconds=result["frozen_seconds"],
                quiesce_note=result["quiesce_note"],
                disks=[
                    pb.DiskSnapshot(
                        target=d["target"],
                        kind=KIND[VolumeKind(d["kind"])],
                        snapshot_id=d["snapshot_id"],
                        content=d["content"],
                        active_image=d["active_image"],
                        method=d.get("method", ""),
                    )
                    for d in result["disks"]
                ],
            )
        )
    elif operation == "revert":
        message.revert.CopyFrom(
            pb.RevertResult(
                snapshot_id=result["snapshot_id"],
                target=result["target"],
                active_image=result["active_image"],
            )
        )
    elif operation == "delete":
        message.delete.CopyFrom(
            pb.DeleteResult(
                snapshot_id=result["snapshot_id"],
                target=result["target"],
                active_image=result["active_image"],
                removed=result["removed"],
                note=result.get("note", ""),
            )
        )
    elif operation in ("consolidate", "flatten"):
        message.chain.CopyFrom(
            pb.ChainResult(
                disks=[
                    pb.DiskChainResult(
                        target=d["target"],
                        active_image=d["active_image"],
                        depth_before=d["depth_before"],
                        depth_after=d["depth_after"],
                        removed=d["removed"],
                        snapshots_lost=d["snapshots_lost"],
                        note=d["note"],
                    )
                    for d in result["disks"]
                ]
            )
        )
