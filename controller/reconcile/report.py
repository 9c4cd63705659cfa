"""What a reconcile pass found and did, as plain data: rows for a table (`table`) and a
dict for JSON (`to_dict`)."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from controller.agents import AgentSnapshot
from controller.reconcile.backups import BackupFinding


class VolumeStatus(enum.StrEnum):
    IN_LINE = "in-line"  # CloudStack's path is the agent's active image
    STALE = "stale"  # CloudStack's path is stale and fixable (not fixed: fix was off)
    FIXED = "fixed"  # it was stale and updateVolume fixed it in this pass
    FIX_FAILED = "fix-failed"  # stale and fixable, but updateVolume failed
    BUSY = "busy"  # stale, but a job or CloudStack is working on the volume: not fixed now
    DIFFERS = "differs"  # CloudStack and the agent differ for no known reason: flagged only
    NO_DISK = "no-disk"  # the agent has no disk that is this volume
    UNREACHABLE = "agent-unreachable"  # the agent of the VM's host did not answer


PROBLEMS = frozenset(
    {VolumeStatus.FIX_FAILED, VolumeStatus.DIFFERS, VolumeStatus.NO_DISK, VolumeStatus.STALE}
)


@dataclass(frozen=True)
class VolumeRow:
    volume_id: str
    volume_name: str
    vm_name: str
    domain: str
    host_name: str
    pool_name: str
    target: str | None  # the agent's disk, when one is this volume
    cloudstack_path: str | None  # as CloudStack recorded it when the pass read it
    agent_image: str | None  # the agent's active image
    expected_path: str | None  # what CloudStack should record, when that can be justified
    status: VolumeStatus
    detail: str = ""


@dataclass(frozen=True)
class IntentRow:
    intent_id: str
    job_id: str
    volume_id: str
    state: str  # when the pass found it
    new_path: str | None
    age_seconds: float
    action: str  # "applied", "abandoned", "would apply", "would abandon", "flagged", ...
    detail: str = ""


@dataclass(frozen=True)
class TransitionalSnapshot:
    snapshot_id: str
    name: str
    volume_id: str
    volume_name: str
    state: str  # CloudStack's: Creating, BackingUp, Destroying, Allocated
    created: datetime | None  # None when CloudStack's date cannot be read
    age_seconds: float
    vm_name: str
    host_name: str
    target: str | None
    agent_snapshots: tuple[AgentSnapshot, ...]  # what the agent lists for the disk
    agent_note: str  # why the agent's view is missing, or what it says


@dataclass(frozen=True)
class ReconcileReport:
    started_at: datetime
    fix: bool
    volumes: tuple[VolumeRow, ...]
    intents: tuple[IntentRow, ...]
    transitional: tuple[TransitionalSnapshot, ...]
    errors: tuple[str, ...]  # what stopped part of the pass (a list call that failed)
    backups: tuple[BackupFinding, ...] = ()  # backups against their snapshots (backups.py)

    @property
    def fixed(self) -> tuple[VolumeRow, ...]:
        return tuple(v for v in self.volumes if v.status is VolumeStatus.FIXED)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(str(v.status) for v in self.volumes))

    @property
    def clean(self) -> bool:
        """Nothing to look at: every volume in line (or fixed), no old intent, no stuck
        snapshot, no error."""
        settled = (VolumeStatus.IN_LINE, VolumeStatus.FIXED)
        return (
            all(v.status in settled for v in self.volumes)
            and not self.transitional
            and not self.errors
            and not any(b.problem for b in self.backups)
            and all(i.action in ("applied", "abandoned") for i in self.intents)
        )

    def problems(self) -> list[str]:
        """What needs an operator's eyes, one line each."""
        lines = [
            f"volume {v.volume_name} ({v.vm_name}, {v.target or 'no disk'}): {v.status}: {v.detail}"
            for v in self.volumes
            if v.status not in (VolumeStatus.IN_LINE, VolumeStatus.FIXED)
        ]
        lines += [
            f"intent {i.intent_id} of job {i.job_id} ({i.state}, {i.age_seconds:.0f}s old): "
            f"{i.action}: {i.detail}"
            for i in self.intents
            if i.action not in ("applied", "abandoned")
        ]
        lines += [
            f"snapshot {t.snapshot_id} of volume {t.volume_name} {t.state} for "
            f"{t.age_seconds:.0f}s: {t.agent_note}"
            for t in self.transitional
        ]
        lines += [
            f"volume {b.volume} ({b.vm_name}): snapshot {b.snapshot_id}: {b.detail}"
            for b in self.backups
            if b.problem
        ]
        return lines + list(self.errors)

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(
            {
                "started_at": self.started_at,
                "fix": self.fix,
                "clean": self.clean,
                "counts": self.counts,
                "volumes": [asdict(v) for v in self.volumes],
                "fixed": [v.volume_id for v in self.fixed],
                "intents": [asdict(i) for i in self.intents],
                "transitional_snapshots": [asdict(t) for t in self.transitional],
                "backups": [asdict(b) | {"problem": b.problem} for b in self.backups],
                "errors": list(self.errors),
            }
        )
        return plain

    def table(self) -> list[list[str]]:
        """The volumes as rows of text, the first row the header."""
        columns = ("volume_name", "vm_name", "target", "status", "cloudstack_path",
                   "agent_image", "detail")  # fmt: skip
        rows = [list(columns)]
        for row in self.volumes:
            values = asdict(row)
            rows.append(["" if values[c] is None else str(values[c]) for c in columns])
        return rows


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601, enums as their values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
