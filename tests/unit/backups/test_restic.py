"""The restic adapter on a real restic repository in a temporary directory: how its failures
reach the agent (a wrong key, damaged data, no repository) and that a stream whose producer
failed is never stored."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO

import pytest

from agent.errors import Damaged, Precondition, Unavailable
from agent.hypervisor import restic
from agent.hypervisor.restic import ResticRepository

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def opened(tmp_path: Path, key: str = "right key\n") -> ResticRepository:
    key_file = tmp_path / f"key-{len(list(tmp_path.glob('key-*')))}"
    key_file.write_text(key)
    return ResticRepository(str(tmp_path / "repository"), str(key_file))


@pytest.fixture(scope="module")
def repository_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("restic")


@pytest.fixture(scope="module")
def repository(repository_dir: Path) -> ResticRepository:
    made = opened(repository_dir)
    made.init()
    return made


def store(repository: ResticRepository, data: bytes = PAYLOAD) -> str:
    return repository.backup("/f", ["t"], "host", lambda sink: sink.write(data)).snapshot_id


def read(repository: ResticRepository, snapshot_id: str) -> bytes:
    with repository.dump(snapshot_id, "/f") as source:
        return source.read()


def test_a_stream_reads_back_as_it_was_written(repository: ResticRepository):
    assert read(repository, store(repository)) == PAYLOAD


def test_a_wrong_key_is_a_precondition_with_its_reason(
    repository: ResticRepository, repository_dir: Path
):
    wrong = opened(repository_dir, "another key\n")

    with pytest.raises(Precondition) as refused:
        wrong.exists()

    assert refused.value.reason == "TARGET_KEY_WRONG"
    assert "does not open" in str(refused.value)


def test_no_repository_there_is_told_apart_from_a_failure(tmp_path: Path):
    assert not opened(tmp_path).exists()


def test_a_damaged_pack_is_data_loss(tmp_path: Path):
    repository = opened(tmp_path)
    repository.init()
    snapshot_id = store(repository)
    packs = (p for p in (tmp_path / "repository" / "data").rglob("*") if p.is_file())
    pack = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))

    with pytest.raises(Damaged) as damaged:
        read(repository, snapshot_id)

    assert damaged.value.reason == "BACKUP_DAMAGED"


def test_a_producer_that_fails_stores_nothing(repository: ResticRepository):
    def half_then_fail(sink: IO[bytes]) -> None:
        sink.write(PAYLOAD[: len(PAYLOAD) // 2])
        raise OSError("the source went away")

    with pytest.raises(OSError):
        repository.backup("/f", ["failed"], "host", half_then_fail)

    assert not repository.snapshots(["failed"])


def test_a_repository_locked_by_a_live_restic_is_waited_for_then_unavailable_its_lock_kept(
    repository: ResticRepository, repository_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(restic, "LOCK_RETRIES", (0.2, 0.2))
    started = threading.Event()
    release = threading.Event()

    def slow(sink: IO[bytes]) -> None:
        sink.write(PAYLOAD)
        started.set()
        release.wait(60)

    other = opened(repository_dir)  # another agent's backup, holding its lock meanwhile
    uploading = threading.Thread(target=lambda: other.backup("/slow", ["t"], "host", slow))
    uploading.start()
    try:
        assert started.wait(30)
        time.sleep(1)  # restic takes its lock before it reads its input

        with pytest.raises(Unavailable) as locked:
            repository.prune()  # needs the repository to itself

        assert locked.value.reason == "TARGET_LOCKED"
    finally:
        release.set()
        uploading.join(60)
    assert any("/slow" in s.paths for s in repository.snapshots())  # its lock was not broken
