"""The reconcile pass's view of backups: a backup whose snapshot is gone is information, a
policy snapshot newer than the volume's newest backup with none of its own is a problem
(unless its backup is on the way), and the report says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.agents import AgentBackup, AgentDiskSnapshots, AgentSnapshot
from controller.reconcile.backups import BACKUP_MISSING, SNAPSHOT_GONE, BackupFinding, compare
from controller.reconcile.report import ReconcileReport

T0 = datetime(2026, 12, 4, 2, 30, tzinfo=UTC)
PREFIX = "policy-p1-"


def snap(id: str, hours: int, name: str = PREFIX + "x") -> AgentSnapshot:
    return AgentSnapshot(id, name, T0 + timedelta(hours=hours), "application", "")


def backup(id: str, snapshot_id: str, hours: int) -> AgentBackup:
    return AgentBackup(
        id, "i-web-1/vda", snapshot_id, PREFIX + "x", "", T0 + timedelta(hours=hours)
    )


def found(backups: list[AgentBackup], snaps: list[AgentSnapshot], underway: set[str] = set()):  # noqa: B006
    disks = [AgentDiskSnapshots("vda", "rbd", "rbd/web-1", tuple(snaps))]
    return [
        (f.kind, f.snapshot_id)
        for f in compare("web-1", "i-web-1", "nfs", backups, disks, {PREFIX}, underway)
    ]


def test_a_backup_whose_snapshot_was_deleted_is_reported_as_information():
    assert found([backup("b1", "s1", 0), backup("b2", "s2", 1)], [snap("s2", 1)]) == [
        (SNAPSHOT_GONE, "s1")
    ]


def test_a_newer_snapshot_without_a_backup_is_missing_one_unless_it_is_on_the_way():
    backups = [backup("b2", "s2", 1)]
    snaps = [snap("s1", 0), snap("s2", 1), snap("s3", 2), snap("m", 3, name="manual")]
    assert found(backups, snaps) == [(BACKUP_MISSING, "s3")]  # s1: older, m: not a policy's
    assert found(backups, snaps, underway={"s3"}) == []


def test_only_a_missing_backup_makes_the_report_unclean():
    gone = BackupFinding(SNAPSHOT_GONE, "web-1", "i-web-1/vda", "nfs", "s1", "b1", "gone")
    missing = BackupFinding(BACKUP_MISSING, "web-1", "i-web-1/vda", "nfs", "s3", "", "no backup")
    report = ReconcileReport(T0, False, (), (), (), (), backups=(gone,))
    assert report.clean and report.problems() == []
    report = ReconcileReport(T0, False, (), (), (), (), backups=(gone, missing))
    assert not report.clean
    assert report.problems() == ["volume i-web-1/vda (web-1): snapshot s3: no backup"]
    assert [b["problem"] for b in report.to_dict()["backups"]] == [False, True]
