"""Keeping CloudStack in line with the hosts: a snapshot job's new active images applied to
CloudStack's volume paths (`apply_snapshot`), and the reconcile pass (`reconcile`) that
compares every running volume's path with its agent's active image, looks at old open
intents and reports snapshots stuck in transitional states."""

from controller.reconcile.apply import AppliedVolume, ApplyOutcome, ApplyResult, apply_snapshot
from controller.reconcile.paths import PathRefused, cloudstack_path, same_volume
from controller.reconcile.report import (
    IntentRow,
    ReconcileReport,
    TransitionalSnapshot,
    VolumeRow,
    VolumeStatus,
)
from controller.reconcile.report import (
    ReconcileReport as Report,
)
from controller.reconcile.run import ReconcileConfig, reconcile
from controller.reconcile.tags import CONSISTENCY, LAST_SNAPSHOT
from controller.reconcile.transitional import TRANSITIONAL_STATES

__all__ = [
    "CONSISTENCY",
    "LAST_SNAPSHOT",
    "TRANSITIONAL_STATES",
    "AppliedVolume",
    "ApplyOutcome",
    "ApplyResult",
    "IntentRow",
    "PathRefused",
    "ReconcileConfig",
    "ReconcileReport",
    "Report",
    "TransitionalSnapshot",
    "VolumeRow",
    "VolumeStatus",
    "apply_snapshot",
    "cloudstack_path",
    "reconcile",
    "same_volume",
]
