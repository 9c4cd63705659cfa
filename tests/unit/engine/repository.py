"""A backup target's repository in memory, for the engine tier (the lab runs real restic):
a snapshot is stored only when its stream's producer finished, as restic stores it only once
it read the stream's end; `damage` makes what it gives back differ from what it was given."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from agent.hypervisor.restic import Snapshot, Uploaded


@dataclass
class Stored:
    snapshot: Snapshot
    files: dict[str, bytes]


@dataclass
class FakeRepository:
    repository: str = "/srv/fake-target"
    free: int | None = None
    damage: bool = False
    stored: dict[str, Stored] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def exists(self) -> bool:
        return True

    def present(self) -> bool:
        return True

    def free_bytes(self) -> int | None:
        return self.free

    def snapshots(self, tags: Sequence[str] = ()) -> list[Snapshot]:
        return [s.snapshot for s in self.stored.values() if set(tags) <= set(s.snapshot.tags)]

    def backup(
        self, filename: str, tags: Sequence[str], host: str, produce: Callable[[IO[bytes]], None]
    ) -> Uploaded:
        self.calls.append(f"backup {filename}")
        sink = io.BytesIO()
        produce(sink)
        data = sink.getvalue()
        snapshot_id = f"{next(self._ids):08x}"
        snapshot = Snapshot(snapshot_id, "", host, (filename,), tuple(tags))
        self.stored[snapshot_id] = Stored(snapshot, {filename: data})
        return Uploaded(snapshot_id, len(data), len(data))

    @contextmanager
    def dump(self, snapshot_id: str, filename: str) -> Iterator[IO[bytes]]:
        data = self.stored[snapshot_id].files[filename]
        if self.damage:
            data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
        yield io.BytesIO(data)

    def forget(self, snapshot_ids: Sequence[str], prune: bool = True) -> None:
        self.calls.append(f"forget {' '.join(snapshot_ids)}")
        for snapshot_id in snapshot_ids:
            self.stored.pop(snapshot_id, None)

    def prune(self) -> None:
        self.calls.append("prune")

    def unlock(self) -> None:
        self.calls.append("unlock")
