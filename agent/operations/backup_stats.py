"""What this host's backups and restores moved, from the journal's succeeded jobs: totals per
target, and each volume's last backup (for alerting on a volume not backed up lately). Read
from the journal, so an agent restart loses none of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.operations import backup, restore, restore_in_place
from agent.operations.services import Services


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
        made, target = result["backup"], result["target"]
        totals = found.targets.setdefault(target, TargetTotals())
        totals.backups += 1
        totals.read_bytes += made["data_bytes"]
        totals.written_bytes += made["stream_bytes"]
        totals.stored_bytes += made["stored_bytes"]
        key = (made["volume"], target)
        if key not in found.last or found.last[key].backed_up <= made["backed_up"]:
            found.last[key] = LastBackup(
                made["backed_up"], made["data_bytes"], made["stored_bytes"]
            )
    for operation in (restore.OPERATION, restore_in_place.OPERATION):
        for result in svc.journal.succeeded_results(operation):
            found.restores += 1
            found.restored_bytes += result["data_bytes"]
    return found
