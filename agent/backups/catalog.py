"""What a target holds, read from the target alone (any host that has its key can): each
backup is two restic snapshots, its stream (`/hostsnap/<id>.rbd-diff`, tagged
`hostsnap-stream`) and, once the stream was read back and matched, its marker (tagged
`hostsnap-verified`, with the backup's facts as tags). A stream without a marker is not a
backup: an upload that failed, or one a killed agent left, removed by recovery."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.errors import NotFound, Precondition

STREAM_TAG = "hostsnap-stream"
VERIFIED_TAG = "hostsnap-verified"
_PREFIX = "hostsnap-"
_SAFE = "/@:._-"


class Snapshots(Protocol):
    """A repository's snapshots (restic.ResticRepository)."""

    def snapshots(self, tags: Sequence[str] = ()) -> Sequence[_Listed]: ...


class _Listed(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Backup:
    id: str
    volume: str  # domain/target (CloudStack's VM instance name and its disk)
    image: str  # "pool/image" of an RBD volume; a file volume's layer that was backed up
    kind: str  # "rbd" or "file", as the snapshot's
    snapshot_id: str
    snapshot_name: str
    parent: str  # the backup this one's stream applies over; "" for a full backup
    size: int  # the image's size at the snapshot
    sha256: str  # the stream's, as read back from the target
    stream_bytes: int
    data_bytes: int  # the data the stream holds (its extents' bytes)
    stored_bytes: int  # new data the target took (deduplicated; compressed from restic 0.17)
    taken: float  # when the snapshot was taken (Unix time)
    backed_up: float  # when its stream was on the target (the marker follows its read-back)
    host: str  # the host that made it
    stream: str  # restic snapshot id of the stream
    marker: str = ""  # restic snapshot id of the marker (once listed)

    @property
    def full(self) -> bool:
        return not self.parent

    def marker_tags(self) -> list[str]:
        facts = dataclasses.asdict(self)
        facts.pop("marker")
        return [VERIFIED_TAG] + [f"{_PREFIX}{k}={_quote(str(v))}" for k, v in facts.items()]

    @classmethod
    def from_tags(cls, tags: Iterable[str], marker: str) -> Backup | None:
        """The backup a marker's tags describe; None for tags this release cannot read."""
        facts: dict[str, str] = {}
        for tag in tags:
            key, eq, value = tag.removeprefix(_PREFIX).partition("=")
            if tag.startswith(_PREFIX) and eq:
                facts[key] = urllib.parse.unquote(value)
        try:
            return cls(
                id=facts["id"],
                volume=facts["volume"],
                image=facts["image"],
                kind=facts["kind"],
                snapshot_id=facts["snapshot_id"],
                snapshot_name=facts["snapshot_name"],
                parent=facts["parent"],
                size=int(facts["size"]),
                sha256=facts["sha256"],
                stream_bytes=int(facts["stream_bytes"]),
                data_bytes=int(facts["data_bytes"]),
                stored_bytes=int(facts["stored_bytes"]),
                taken=float(facts["taken"]),
                backed_up=float(facts["backed_up"]),
                host=facts["host"],
                stream=facts["stream"],
                marker=marker,
            )
        except (KeyError, ValueError):
            return None


def stream_path(backup_id: str) -> str:
    return f"/hostsnap/{backup_id}.rbd-diff"


def stream_tags(backup_id: str, volume: str) -> list[str]:
    return [STREAM_TAG, f"{_PREFIX}id={backup_id}", f"{_PREFIX}volume={_quote(volume)}"]


def of_backup(backup_id: str) -> str:
    """The tag every restic snapshot of the backup has (stream and marker)."""
    return f"{_PREFIX}id={backup_id}"


def backups(repository: Snapshots, domain: str = "") -> list[Backup]:
    """The target's backups (verified: with a marker), oldest first; of `domain` when given."""
    found = []
    for listed in repository.snapshots([VERIFIED_TAG]):
        backup = Backup.from_tags(listed.tags, listed.id)
        if backup is not None and (not domain or backup.volume.split("/")[0] == domain):
            found.append(backup)
    return sorted(found, key=lambda b: (b.backed_up, b.id))


def find(found: Sequence[Backup], backup_id: str) -> Backup:
    for backup in found:
        if backup.id == backup_id:
            return backup
    raise NotFound(f"no backup {backup_id} on the target", reason="BACKUP_NOT_FOUND")


def chain(found: Sequence[Backup], backup_id: str) -> list[Backup]:
    """The backups a restore applies, the full one first, ending with `backup_id`."""
    links = [find(found, backup_id)]
    while links[-1].parent:
        try:
            links.append(find(found, links[-1].parent))
        except NotFound:
            raise Precondition(
                f"backup {backup_id} needs backup {links[-1].parent}, which the target no longer "
                "holds: it cannot be restored",
                reason="BACKUP_CHAIN_BROKEN",
            ) from None
        if len(links) > len(found):
            raise Precondition(
                f"the backups of {backup_id} form a cycle", reason="BACKUP_CHAIN_BROKEN"
            )
    return links[::-1]


def children(found: Sequence[Backup], backup_id: str) -> list[Backup]:
    return [b for b in found if b.parent == backup_id]


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe=_SAFE)
