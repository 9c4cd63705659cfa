"""The rbd diff v1 stream: what the writer writes the reader reads back, with the same
SHA-256; anything short of a whole, well-formed stream is refused."""

from __future__ import annotations

import io

import pytest

from agent.backups import diff_stream
from agent.backups.diff_stream import Data, Header, Reader, StreamError, Writer, Zero

SIZE = 1 << 20


def written(header: Header | None = None) -> tuple[bytes, str]:
    sink = io.BytesIO()
    writer = Writer(sink, header or Header(None, None, SIZE))
    writer.data(0, b"a" * 100)
    writer.zero(4096, 8192)
    writer.data(SIZE - 10, b"z" * 10)
    sha = writer.end()
    return sink.getvalue(), sha


def test_what_is_written_reads_back_with_the_same_hash():
    raw, sha = written(Header("from", "to", SIZE))

    reader = Reader(io.BytesIO(raw))
    records = list(reader.records())

    assert reader.header == Header("from", "to", SIZE)
    assert records == [Data(0, b"a" * 100), Zero(4096, 8192), Data(SIZE - 10, b"z" * 10)]
    assert reader.sha256 == sha


def test_the_format_is_cephs_byte_for_byte():
    sink = io.BytesIO()
    writer = Writer(sink, Header(None, "s1", 4096))
    writer.data(512, b"xy")
    writer.end()

    assert sink.getvalue() == (
        b"rbd diff v1\n"
        + b"t" + (2).to_bytes(4, "little") + b"s1"
        + b"s" + (4096).to_bytes(8, "little")
        + b"w" + (512).to_bytes(8, "little") + (2).to_bytes(8, "little") + b"xy"
        + b"e"
    )  # fmt: skip


def test_large_data_records_come_in_pieces():
    sink = io.BytesIO()
    writer = Writer(sink, Header(None, None, SIZE))
    writer.data(0, bytes(range(256)) * 64)
    writer.end()

    pieces = list(Reader(io.BytesIO(sink.getvalue()), max_data=4096).records())

    assert [(p.offset, len(p.data)) for p in pieces if isinstance(p, Data)] == [
        (0, 4096),
        (4096, 4096),
        (8192, 4096),
        (12288, 4096),
    ]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-1],  # no end record
        lambda raw: raw[: len(raw) // 2],  # cut in a data record
        lambda raw: raw + b"x",  # bytes after the end
        lambda raw: b"rbd diff v2\n" + raw[12:],  # another format
        lambda raw: raw.replace(b"z", b"q", 1),  # an unknown record
    ],
)
def test_a_damaged_stream_is_refused(damage):
    raw, _ = written()

    with pytest.raises(StreamError):
        list(Reader(io.BytesIO(damage(raw))).records())


def test_an_extent_outside_the_image_is_refused_when_writing_and_reading():
    writer = Writer(io.BytesIO(), Header(None, None, SIZE))
    with pytest.raises(StreamError):
        writer.data(SIZE - 1, b"ab")
    sink = io.BytesIO()
    bad = Writer(sink, Header(None, None, SIZE * 2))
    bad.data(SIZE, b"ab")
    bad.end()
    raw = sink.getvalue().replace((SIZE * 2).to_bytes(8, "little"), SIZE.to_bytes(8, "little"))

    with pytest.raises(StreamError, match="outside"):
        list(Reader(io.BytesIO(raw)).records())


def test_apply_writes_every_record_and_returns_the_hash():
    raw, sha = written()
    image = bytearray(b"\xff" * SIZE)

    def write(offset: int, data: bytes) -> None:
        image[offset : offset + len(data)] = data

    def zero(offset: int, length: int) -> None:
        image[offset : offset + length] = bytes(length)

    assert diff_stream.apply(Reader(io.BytesIO(raw)), write, zero) == sha
    assert image[:100] == b"a" * 100 and image[4096 : 4096 + 8192] == bytes(8192)
    assert image[SIZE - 10 :] == b"z" * 10 and image[100:4096] == b"\xff" * 3996
