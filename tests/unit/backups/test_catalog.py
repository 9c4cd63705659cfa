"""A target's backups as their markers' tags say: written and read back the same, odd
characters included; a restore's chain, and a chain with a link missing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from agent.backups import catalog
from agent.backups.catalog import Backup
from agent.errors import NotFound, Precondition


def made(backup_id: str, parent: str = "", **changes: object) -> Backup:
    backup = Backup(
        id=backup_id,
        volume="i-2-10-VM/vda",
        image="/var/lib/libvirt/images/a disk, with=odd %chars.qcow2",
        kind="file",
        snapshot_id="f" * 32,
        snapshot_name="before upgrade",
        parent=parent,
        size=1 << 30,
        sha256="ab" * 32,
        stream_bytes=123,
        data_bytes=100,
        stored_bytes=80,
        taken=1700000000.5,
        backed_up=1700000100.25,
        host="kvm-1",
        stream="0123abcd",
    )
    return dataclasses.replace(backup, **changes)


@dataclass(frozen=True)
class Listed:
    id: str
    tags: tuple[str, ...]


class Repository:
    def __init__(self, *listed: Listed) -> None:
        self.listed = listed
        self.asked: list[list[str]] = []

    def snapshots(self, tags: Sequence[str] = ()) -> list[Listed]:
        self.asked.append(list(tags))
        return [s for s in self.listed if set(tags) <= set(s.tags)]


def test_a_markers_tags_read_back_as_the_backup():
    backup = made("a" * 32)
    tags = backup.marker_tags()

    assert not any("," in t for t in tags)  # restic splits --tag values at commas
    assert Backup.from_tags(tags, "marker1") == dataclasses.replace(backup, marker="marker1")


def test_backups_lists_the_verified_ones_oldest_first_and_skips_unreadable_markers():
    newer, older = made("b" * 32, backed_up=2.0), made("a" * 32, backed_up=1.0)
    other = made("c" * 32, volume="other-vm/vda")
    repository = Repository(
        Listed("m1", tuple(newer.marker_tags())),
        Listed("m2", tuple(older.marker_tags())),
        Listed("m3", tuple(other.marker_tags())),
        Listed("m4", (catalog.VERIFIED_TAG, "hostsnap-id=" + "d" * 32)),  # a newer release's
        Listed("s1", tuple(catalog.stream_tags("e" * 32, "i-2-10-VM/vda"))),  # no marker
    )

    assert [b.id for b in catalog.backups(repository)] == ["a" * 32, "b" * 32, "c" * 32]
    assert [b.id for b in catalog.backups(repository, "i-2-10-VM")] == ["a" * 32, "b" * 32]
    assert repository.asked[0] == [catalog.VERIFIED_TAG]


def test_a_chain_runs_from_the_full_backup_to_the_one_asked():
    full, first, second = made("a" * 32), made("b" * 32, "a" * 32), made("c" * 32, "b" * 32)

    assert catalog.chain([second, full, first], "c" * 32) == [full, first, second]
    assert catalog.children([full, first, second], "a" * 32) == [first]


def test_a_chain_with_a_link_gone_cannot_be_restored():
    with pytest.raises(Precondition) as broken:
        catalog.chain([made("c" * 32, "b" * 32)], "c" * 32)
    assert broken.value.reason == "BACKUP_CHAIN_BROKEN"
    with pytest.raises(NotFound):
        catalog.chain([], "c" * 32)
