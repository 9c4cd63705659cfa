from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.operations.overlap import read_ahead, write_behind


def test_read_ahead_gives_every_item_in_order():
    assert list(read_ahead(iter(range(100)), depth=3)) == list(range(100))


def test_read_ahead_raises_the_error_of_its_thread_where_it_is_read():
    def items() -> Iterator[int]:
        yield 1
        raise OSError("the image went away")

    reading = read_ahead(items())
    assert next(reading) == 1
    with pytest.raises(OSError, match="went away"):
        next(reading)


def test_read_ahead_stops_reading_when_its_caller_stops():
    made: list[int] = []

    def items() -> Iterator[int]:
        for n in range(1000):
            made.append(n)
            yield n

    reading = read_ahead(items(), depth=2)
    assert next(reading) == 0
    reading.close()  # joins the thread
    assert len(made) <= 4


class Recording:
    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.threads: set[str] = set()
        self.fail_at = fail_at
        self.gate = gate

    def write(self, offset: int, data: bytes) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        if offset == self.fail_at:
            raise OSError("no space left on device")
        self.threads.add(threading.current_thread().name)
        self.calls.append(("write", offset, len(data)))

    def zero(self, offset: int, length: int) -> None:
        self.calls.append(("zero", offset, length))


def test_write_behind_has_done_every_write_in_order_when_its_block_ends():
    target = Recording()
    with write_behind(target, depth=2) as writer:
        for n in range(50):
            writer.write(n * 10, b"x" * n)
        writer.zero(500, 10)
    assert target.calls == [*(("write", n * 10, n) for n in range(50)), ("zero", 500, 10)]
    assert target.threads == {"write-behind"}


def test_a_failed_write_is_raised_and_the_writes_after_it_not_done():
    target = Recording(fail_at=30)
    with pytest.raises(OSError, match="no space"), write_behind(target, depth=2) as writer:
        for n in range(50):
            writer.write(n * 10, b"x")
    assert ("write", 30, 1) not in target.calls
    assert all(offset < 30 for _, offset, _ in target.calls)


def test_a_block_left_by_an_error_drops_the_writes_still_queued():
    gate = threading.Event()
    target = Recording(gate=gate)
    with pytest.raises(KeyError), write_behind(target, depth=8) as writer:
        for n in range(5):
            writer.write(n, b"x")
        threading.Timer(0.3, gate.set).start()  # the first write ends once the block is left
        raise KeyError("the stream is damaged")
    assert len(target.calls) <= 1
