"""Typed journal steps read what the current release's journals hold, written as plain
names and keyword details."""

from __future__ import annotations

from pathlib import Path

from agent import steps
from agent.jobs import Journal
from agent.operations import delete


def journal_with(tmp_path: Path, *written: tuple[str, dict[str, object]]) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.start("job", "delete", "vm", {"snapshot_id": "s"}, None)
    for name, detail in written:
        journal.record("job", name, **detail)
    return journal


def test_a_step_written_by_name_reads_back_typed(tmp_path: Path):
    journal = journal_with(tmp_path, ("merge", {"top": "/p/b", "base": "/p/a", "live": True}))

    job = journal.get("job")

    assert steps.read(job, delete.Step.MERGE, delete.Merge) == delete.Merge("/p/b", "/p/a", True)
    assert steps.reached(job, delete.Step.MERGE)
    assert not steps.reached(job, delete.Step.MERGED)
    assert steps.read(job, delete.Step.MERGED, delete.Merged) is None


def test_a_typed_step_is_written_as_its_name_and_fields(tmp_path: Path):
    journal = journal_with(tmp_path)

    steps.write(journal, "job", delete.Step.MERGED, delete.Merged("/p/a"))

    (written,) = journal.get("job").steps
    assert (written.name, written.detail) == ("merged", {"active": "/p/a"})


def test_fields_a_newer_release_wrote_are_ignored_and_the_last_step_counts(tmp_path: Path):
    journal = journal_with(
        tmp_path,
        ("merged", {"active": "/p/old"}),
        ("merged", {"active": "/p/new", "added_later": 1}),
    )

    job = journal.get("job")

    assert steps.read(job, delete.Step.MERGED, delete.Merged) == delete.Merged("/p/new")
    assert steps.read_all(job, delete.Step.MERGED, delete.Merged) == [
        delete.Merged("/p/old"),
        delete.Merged("/p/new"),
    ]


def test_reached_after_compares_the_last_of_each(tmp_path: Path):
    merge = {"top": "t", "base": "b", "live": False}
    journal = journal_with(
        tmp_path, ("merge", merge), ("merged", {"active": "b"}), ("merge", merge)
    )

    job = journal.get("job")

    assert not steps.reached_after(job, delete.Step.MERGED, delete.Step.MERGE)
    assert steps.reached_after(job, delete.Step.MERGE, delete.Step.MERGED)
    assert not steps.reached_after(job, delete.Step.MERGE, delete.Step.DEFER_MERGE)
