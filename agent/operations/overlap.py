"""Reading and writing beside the work that uses them: a backup's image reads run while
restic takes what was read before, a restore's image writes while the next data comes out of
restic. A pipe holds 64 KiB, so without this each side waits for the other at every chunk."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from agent.hypervisor.ports import ExtentWriter

T = TypeVar("T")
DEPTH = 4  # items waiting: of a backup or restore, 4 MiB chunks
POLL = 0.1  # seconds between looks at whether the other side stopped


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Handover(Generic[T]):
    """The bounded queue between a thread and its caller; neither side waits on it once the
    other has stopped."""

    def __init__(self, depth: int) -> None:
        self._items: queue.Queue[T | _End] = queue.Queue(depth)
        self.stopped = threading.Event()

    def put(self, item: T | _End) -> bool:
        """False, the item dropped, once the other side stopped."""
        while not self.stopped.is_set():
            try:
                self._items.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> T | _End:
        """The next item; _End once the other side stopped (what is still queued dropped)."""
        while not self.stopped.is_set():
            try:
                return self._items.get(timeout=POLL)
            except queue.Empty:
                continue
        return _End()


def read_ahead(items: Iterable[T], depth: int = DEPTH) -> Iterator[T]:
    """`items`, made in a thread up to `depth` ahead of the caller; its error raised here."""
    handover: _Handover[T | _Failed] = _Handover(depth)

    def produce() -> None:
        try:
            for item in items:
                if not handover.put(item):
                    return
            handover.put(_End())
        except BaseException as e:  # handed to the caller, which raises it
            handover.put(_Failed(e))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while not isinstance(item := handover.get(), _End):
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        handover.stopped.set()
        thread.join()


class _WriterBehind:
    """An ExtentWriter whose calls are queued; one that failed is raised by the next."""

    def __init__(
        self,
        target: ExtentWriter,
        handover: _Handover[Callable[[], None]],
        failed: list[BaseException],
    ) -> None:
        self._target = target
        self._handover = handover
        self._failed = failed

    def _queue(self, call: Callable[[], None]) -> None:
        if self._failed:
            raise self._failed[0]
        self._handover.put(call)

    def write(self, offset: int, data: bytes) -> None:
        self._queue(lambda: self._target.write(offset, data))

    def zero(self, offset: int, length: int) -> None:
        self._queue(lambda: self._target.zero(offset, length))


@contextmanager
def write_behind(writer: ExtentWriter, depth: int = DEPTH) -> Iterator[ExtentWriter]:
    """`writer`'s writes done in a thread, up to `depth` behind the caller. Leaving the block
    waits for every write; the first that failed is raised (on leaving at the latest). Left
    by an exception, the writes still queued are dropped."""
    handover: _Handover[Callable[[], None]] = _Handover(depth)
    failed: list[BaseException] = []

    def drain() -> None:
        while not isinstance(call := handover.get(), _End):
            try:
                call()
            except BaseException as e:
                failed.append(e)
                handover.stopped.set()
                return

    thread = threading.Thread(target=drain, name="write-behind", daemon=True)
    thread.start()
    try:
        yield _WriterBehind(writer, handover, failed)
        handover.put(_End())
        thread.join()
    finally:
        handover.stopped.set()
        thread.join()
    if failed:
        raise failed[0]
