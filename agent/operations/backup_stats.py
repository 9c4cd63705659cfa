"""What this host's backups and restores moved, from the journal's succeeded jobs: totals per
target, and each volume's last backup (for alerting on a volume not backed up lately). Read
from the journal, so an agent restart loses none of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agent.operations import backup, restore, restore_in_place
from agent.operations.services import Services

log = logging.getLogger(__name__)


@dataclass
class TargetTotals:
    backups: int = 0
    read_bytes: int = 0  # data read from primary storage (the extents' bytes)
    written_bytes: int = 0  # the streams handed to the repository engine
    stored_bytes: int = 0  # what the target took: new data, deduplicated and compressed


@dataclass(frozen=True)
class LastBackup:
    backed_up: float  # Unix time it was verified
    data_bytes: int
    stored_bytes: int


@dataclass
class BackupStats:
    targets: dict[str, TargetTotals] = field(default_factory=dict)
    last: dict[tuple[str, str], LastBackup] = field(default_factory=dict)  # (volume, target)
    restores: int = 0
    restored_bytes: int = 0  # data written into restored images


def backup_stats(svc: Services) -> BackupStats:
    found = BackupStats()
    for result in svc.journal.succeeded_results(backup.OPERATION):
        try:
            _add_backup(found, result["backup"], result["target"])
        except (KeyError, TypeError, ValueError):
            log.warning("metrics: a backup job's result is not one this release reads")
    for operation in (restore.OPERATION, restore_in_place.OPERATION):
        for result in svc.journal.succeeded_results(operation):
            found.restores += 1
            found.restored_bytes += int(result.get("data_bytes", 0))
    return found


def _add_backup(found: BackupStats, made: dict[str, Any], target: str) -> None:
    last = LastBackup(float(made["backed_up"]), int(made["data_bytes"]), int(made["stored_bytes"]))
    totals = found.targets.setdefault(str(target), TargetTotals())
    totals.backups += 1
    totals.read_bytes += last.data_bytes
    totals.written_bytes += int(made["stream_bytes"])
    totals.stored_bytes += last.stored_bytes
    key = (str(made["volume"]), str(target))
    if key not in found.last or found.last[key].backed_up <= last.backed_up:
        found.last[key] = last
