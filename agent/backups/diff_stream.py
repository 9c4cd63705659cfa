"""The stream one backup holds: Ceph's "rbd diff v1" format (ceph/ceph doc/dev/rbd-diff.rst),
the one `rbd export-diff` writes and `rbd import-diff` reads, for RBD and qcow2 volumes alike.

    header  "rbd diff v1\\n"
    'f' le32 length, name     the snapshot the diff starts from (absent: from nothing)
    't' le32 length, name     the snapshot the diff ends at
    's' le64 size             the image's size at that snapshot
    'w' le64 offset, le64 length, data    data written since
    'z' le64 offset, le64 length          zeroed (discarded) since
    'e'                                   the end

A full backup is a diff from nothing: the allocated extents only, zeroes never sent."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

HEADER = b"rbd diff v1\n"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_EXTENT = struct.Struct("<QQ")
# The largest name a stream may hold (RBD snapshot names are far shorter).
MAX_NAME = 4096


class StreamError(ValueError):
    """The bytes are not a whole, well-formed rbd diff v1 stream."""


@dataclass(frozen=True)
class Header:
    from_snap: str | None
    to_snap: str | None
    size: int


@dataclass(frozen=True)
class Data:
    offset: int
    data: bytes


@dataclass(frozen=True)
class Zero:
    offset: int
    length: int


Record = Data | Zero


@dataclass
class Summary:
    """A written stream's SHA-256 and length, once it ended."""

    sha256: str = ""
    bytes: int = 0


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Writer:
    """Writes a stream to `sink`, counting its bytes and hashing them (SHA-256)."""

    def __init__(self, sink: Sink, header: Header) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.data_bytes = 0
        self._end = header.size
        self._put(HEADER)
        if header.from_snap is not None:
            self._put(b"f" + _name(header.from_snap))
        if header.to_snap is not None:
            self._put(b"t" + _name(header.to_snap))
        self._put(b"s" + _U64.pack(header.size))

    def _put(self, chunk: bytes) -> None:
        self._sink.write(chunk)
        self._hash.update(chunk)
        self.bytes += len(chunk)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length <= 0 or offset + length > self._end:
            raise StreamError(f"extent {offset}+{length} is outside the image's {self._end} bytes")

    def data(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._put(b"w" + _EXTENT.pack(offset, len(data)))
        self._put(data)
        self.data_bytes += len(data)

    def zero(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self._put(b"z" + _EXTENT.pack(offset, length))

    def end(self) -> str:
        """Ends the stream; its SHA-256, hex."""
        self._put(b"e")
        return self._hash.hexdigest()


def _name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > MAX_NAME:
        raise StreamError(f"snapshot name of {len(raw)} bytes")
    return _U32.pack(len(raw)) + raw


class Reader:
    """Reads a stream from `source`: `header`, then `records()`; hashes what it read, and
    fails (StreamError) on anything that is not a whole stream, its end included."""

    def __init__(self, source: IO[bytes], max_data: int = 64 << 20) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self._max_data = max_data
        if self._take(len(HEADER)) != HEADER:
            raise StreamError("not an rbd diff v1 stream")
        from_snap = to_snap = None
        size = None
        while size is None:
            tag = self._take(1)
            if tag == b"f":
                from_snap = self._name()
            elif tag == b"t":
                to_snap = self._name()
            elif tag == b"s":
                size = _U64.unpack(self._take(8))[0]
            else:
                raise StreamError(f"record {tag!r} before the image size")
        self.header = Header(from_snap, to_snap, size)
        self.sha256: str | None = None  # set once the end was read

    def _take(self, n: int) -> bytes:
        chunk = self._source.read(n)
        if len(chunk) != n:
            raise StreamError("the stream ends before its end record")
        self._hash.update(chunk)
        return chunk

    def _name(self) -> str:
        length = _U32.unpack(self._take(4))[0]
        if length > MAX_NAME:
            raise StreamError(f"snapshot name of {length} bytes")
        return self._take(length).decode()

    def _extent(self) -> tuple[int, int]:
        offset, length = _EXTENT.unpack(self._take(16))
        if length == 0 or offset + length > self.header.size:
            raise StreamError(f"extent {offset}+{length} outside the image's {self.header.size}")
        return offset, length

    def records(self) -> Iterator[Record]:
        """Each extent; a data record longer than `max_data` comes in pieces."""
        while True:
            tag = self._take(1)
            if tag == b"e":
                self.sha256 = self._hash.hexdigest()
                if self._source.read(1):
                    raise StreamError("bytes after the end record")
                return
            if tag == b"w":
                offset, length = self._extent()
                while length:
                    piece = min(length, self._max_data)
                    yield Data(offset, self._take(piece))
                    offset, length = offset + piece, length - piece
            elif tag == b"z":
                yield Zero(*self._extent())
            else:
                raise StreamError(f"unknown record {tag!r}")


def apply(
    reader: Reader, write: Callable[[int, bytes], None], zero: Callable[[int, int], None]
) -> str:
    """Applies every record of the stream; its SHA-256 once the whole stream was read."""
    for record in reader.records():
        if isinstance(record, Data):
            write(record.offset, record.data)
        else:
            zero(record.offset, record.length)
    assert reader.sha256 is not None
    return reader.sha256
