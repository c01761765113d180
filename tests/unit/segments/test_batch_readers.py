"""Readers against hostile batches: a valid header and CRC over records that lie, and
decompression bombs. The CRC only says the producer meant these bytes, so every failure here
must be a typed CorruptRecordError (RecordTooLargeError for bombs) naming the batch's offset,
never struct.error, IndexError, ValueError, MemoryError or a hang."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib

import crc32c
import lz4.frame
import pytest
import snappy
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlog.segments import (
    HEADER_BYTES,
    BatchBuilder,
    Compression,
    CorruptRecordError,
    build_batch,
    iter_batches,
    iter_records,
)
from raftlog.segments.batch import RecordTooLargeError, stamp

_HEAD = struct.Struct(">qiibI")  # base_offset, batch_length, leader_epoch, magic, crc
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count


def zz(n: int) -> bytes:
    """A zigzag varint, written out here independently of the codec under test."""
    z = (n << 1) if n >= 0 else ((-n) << 1) - 1
    out = b""
    while True:
        if z < 0x80:
            return out + bytes([z])
        out += bytes([(z & 0x7F) | 0x80])
        z >>= 7


def forge(
    payload: bytes,
    *,
    record_count: int,
    codec: Compression = Compression.NONE,
    base_offset: int = 100,
) -> bytes:
    """A batch whose header and CRC are valid whatever the payload says: what a hostile
    producer can get stored (the broker checks only the header and the CRC)."""
    tail = _TAIL.pack(int(codec), record_count - 1, 1_000, 1_000, -1, -1, -1, record_count)
    crc = crc32c.crc32c(payload, crc32c.crc32c(tail))
    return _HEAD.pack(base_offset, HEADER_BYTES - 12 + len(payload), 0, 2, crc) + tail + payload


def record(
    offset_delta: int,
    value: bytes | None = b"v",
    *,
    key_len: int | None = None,
    value_len: int | None = None,
    headers: bytes = b"\0",
    length: int | None = None,
) -> bytes:
    """One Kafka v2 record's bytes, with any length field overridable to lie."""
    body_value = b"" if value is None else value
    vlen = (-1 if value is None else len(value)) if value_len is None else value_len
    klen = -1 if key_len is None else key_len
    body = b"\0" + zz(0) + zz(offset_delta) + zz(klen) + zz(vlen) + body_value + headers
    return zz(len(body) if length is None else length) + body


def payload_of(batch: bytes) -> bytes:
    return batch[HEADER_BYTES:]


def decode_all(batch: bytes, **kwargs: int) -> list[int]:
    out = []
    for position, header in iter_batches(batch):
        out.extend(
            r.offset for r in iter_records(batch[position : position + header.size_bytes], **kwargs)
        )
    return out


GOOD3 = record(0) + record(1) + record(2)


def test_a_forged_but_honest_batch_decodes() -> None:
    assert decode_all(forge(GOOD3, record_count=3)) == [100, 101, 102]


@pytest.mark.parametrize(
    ("payload", "record_count", "match"),
    [
        pytest.param(
            GOOD3, 5, "record_count 5 but the payload ends after 3 records", id="count-too-high"
        ),
        pytest.param(GOOD3, 2, "bytes after its 2 records", id="count-too-low"),
        pytest.param(GOOD3, 1, "bytes after its 1 records", id="count-one"),
        # offset deltas strictly increase within [0, last_offset_delta] (gaps are the cleaner's)
        pytest.param(
            record(0) + record(0) + record(2),
            3,
            "offset_delta 0 out of order",
            id="offset-delta-repeats",
        ),
        pytest.param(
            record(0) + record(7) + record(2),
            3,
            "offset_delta 7 out of order",
            id="offset-delta-jumps",
        ),
        pytest.param(
            record(0) + record(-100) + record(2),
            3,
            "offset_delta -100 out of order",
            id="offset-delta-negative",
        ),
        pytest.param(
            record(0) + record(1, length=-4) + record(2), 3, "length -4", id="length-negative"
        ),
        pytest.param(
            record(0) + record(1, length=2**31 - 1) + record(2), 3, "overruns", id="length-huge"
        ),
        pytest.param(
            record(0) + record(1, key_len=-5) + record(2),
            3,
            "key length -5",
            id="key-length-negative",
        ),
        pytest.param(
            record(0) + record(1, value_len=-9) + record(2),
            3,
            "value length -9",
            id="value-length-negative",
        ),
        pytest.param(
            record(0) + record(1, key_len=2**31 - 1) + record(2),
            3,
            "batch at offset 100",
            id="key-length-huge",
        ),
        pytest.param(
            record(0) + record(1, value_len=40) + record(2),
            3,
            "batch at offset 100",
            id="value-length-overruns",
        ),
        pytest.param(
            record(0, headers=zz(-1)),
            1,
            "header count -1",
            id="header-count-negative",
        ),
        pytest.param(
            record(0, headers=zz(2**31 - 1)),
            1,
            "header count",
            id="header-count-huge",
        ),
        # a header key length of -4 never moved the old reader's position: with a large header
        # count it looped until MemoryError
        pytest.param(
            record(0, headers=zz(1) + zz(-4) + zz(-1)),
            1,
            "header key length -4",
            id="header-key-length-negative",
        ),
        pytest.param(
            record(0, headers=zz(1) + zz(0) + zz(-3)),
            1,
            "header value length -3",
            id="header-value-length-negative",
        ),
        pytest.param(
            record(0, headers=zz(1) + zz(2) + b"\xff\xfe" + zz(-1)),
            1,
            "decode",
            id="header-key-not-utf8",
        ),
        pytest.param(GOOD3[:-3], 3, "batch at offset 100", id="truncated-record"),
        pytest.param(
            b"", 1, "record_count 1 but the payload ends after 0 records", id="empty-payload"
        ),
        pytest.param(b"\x07" * 40, 1, "batch at offset 100", id="garbage-payload"),
    ],
)
def test_lying_records_are_corrupt_and_name_the_batch(
    payload: bytes, record_count: int, match: str
) -> None:
    batch = forge(payload, record_count=record_count)
    with pytest.raises(CorruptRecordError, match=match) as caught:
        decode_all(batch)
    assert caught.value.offset == 100


@pytest.mark.parametrize("codec", [c for c in Compression if c is not Compression.NONE])
def test_garbage_under_a_valid_crc_is_corrupt_for_every_codec(codec: Compression) -> None:
    batch = forge(b"\x13\x37garbage, not a compressed block" * 3, record_count=1, codec=codec)
    with pytest.raises(CorruptRecordError, match=codec.name.lower()) as caught:
        decode_all(batch)
    assert caught.value.offset == 100


@pytest.mark.parametrize("codec", [c for c in Compression if c is not Compression.NONE])
def test_a_truncated_compressed_payload_is_corrupt(codec: Compression) -> None:
    good = BatchBuilder(codec)
    for i in range(50):
        good.append(b"value %d" % i * 20, timestamp_ms=1_000)
    payload = payload_of(good.build())
    batch = forge(payload[: len(payload) // 2], record_count=50, codec=codec)
    with pytest.raises(CorruptRecordError):
        decode_all(batch)


# ---- decompression bombs ---------------------------------------------------------------------


def _zeros_gzip(n_bytes: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join([deflate.compress(chunk) for _ in range(n_bytes >> 20)] + [deflate.flush()])


def bomb(codec: Compression, n_bytes: int, *, content_size: bool = True) -> bytes:
    """A batch of one record whose payload inflates to ``n_bytes`` of zeros."""
    match codec:
        case Compression.GZIP:
            payload = _zeros_gzip(n_bytes)
        case Compression.SNAPPY:
            payload = bytes(snappy.compress(bytes(n_bytes)))
        case Compression.LZ4:
            payload = bytes(lz4.frame.compress(bytes(n_bytes), store_size=content_size))
        case Compression.ZSTD:
            compressor = zstandard.ZstdCompressor(write_content_size=content_size)
            payload = compressor.compress(bytes(n_bytes))
        case _:
            raise AssertionError(codec)
    return forge(payload, record_count=1, codec=codec)


BOMB_CASES = [
    pytest.param(Compression.GZIP, True, id="gzip"),
    pytest.param(Compression.SNAPPY, True, id="snappy"),
    pytest.param(Compression.LZ4, True, id="lz4-with-content-size"),
    pytest.param(Compression.LZ4, False, id="lz4-streamed"),
    pytest.param(Compression.ZSTD, True, id="zstd-with-content-size"),
    pytest.param(Compression.ZSTD, False, id="zstd-streamed"),
]


@pytest.mark.parametrize(("codec", "content_size"), BOMB_CASES)
def test_a_bomb_stops_at_the_limit_with_record_too_large(
    codec: Compression, content_size: bool
) -> None:
    batch = bomb(codec, 16 << 20, content_size=content_size)
    with pytest.raises(RecordTooLargeError, match="past the 1048576 byte limit") as caught:
        decode_all(batch, uncompressed_bytes_max=1 << 20)
    assert isinstance(caught.value, CorruptRecordError)  # one family: readers catch the base
    assert caught.value.offset == 100
    assert not caught.value.retriable


@pytest.mark.parametrize(("codec", "content_size"), BOMB_CASES)
def test_a_payload_exactly_at_the_limit_still_decodes(
    codec: Compression, content_size: bool
) -> None:
    value = bytes(1 << 20)
    payload = record(0, value)
    builder = BatchBuilder(codec)
    builder.append(value, timestamp_ms=1_000)
    batch = builder.build()
    if codec is Compression.LZ4 and not content_size:
        streamed = lz4.frame.compress(payload, store_size=False)
        batch = forge(streamed, record_count=1, codec=codec, base_offset=0)
    if codec is Compression.ZSTD and not content_size:
        streamed = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
        batch = forge(streamed, record_count=1, codec=codec, base_offset=0)
    records = list(iter_records(batch, uncompressed_bytes_max=len(payload)))
    assert records[0].value == value
    with pytest.raises(RecordTooLargeError):
        list(iter_records(batch, uncompressed_bytes_max=len(payload) - 1))


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.LZ4, Compression.ZSTD])
def test_concatenated_members_and_frames_decode_within_one_budget(codec: Compression) -> None:
    one, two = record(0, b"a" * 1000), record(1, b"b" * 1000)
    match codec:
        case Compression.GZIP:
            payload = zlib.compress(one, wbits=31) + zlib.compress(two, wbits=31)
        case Compression.LZ4:
            payload = lz4.frame.compress(one) + lz4.frame.compress(two)
        case _:
            z = zstandard.ZstdCompressor(write_content_size=False)
            payload = z.compress(one) + z.compress(two)
    batch = forge(payload, record_count=2, codec=codec)
    assert decode_all(batch) == [100, 101]
    with pytest.raises(RecordTooLargeError):
        decode_all(batch, uncompressed_bytes_max=len(one) + 10)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    from raftlog.segments import CorruptRecordError, iter_records

    def peak_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024

    batch = sys.stdin.buffer.read()
    before = peak_mib()
    try:
        list(iter_records(batch, uncompressed_bytes_max=8 << 20))
    except CorruptRecordError as exc:
        print(type(exc).__name__, peak_mib() - before)
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc VmHWM")
@pytest.mark.parametrize(("codec", "content_size"), BOMB_CASES)
def test_a_256_mib_bomb_costs_about_the_limit_not_its_inflated_size(
    codec: Compression, content_size: bool
) -> None:
    # in a fresh process, so the peak RSS belongs to this one decode; before the bounded
    # inflaters this peaked at 2x the inflated size (a 1 GiB gzip bomb: 2.1 GB)
    batch = bomb(codec, 256 << 20, content_size=content_size)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT], input=batch, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    name, grown_mib = done.stdout.decode().split()
    assert name == "RecordTooLargeError"
    assert int(grown_mib) < 40, f"peak RSS grew {grown_mib} MiB for an 8 MiB limit"


# ---- property: mutated batches with a recomputed CRC -------------------------------------------


def _recrc(batch: bytearray) -> bytes:
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def _valid_batch(codec: Compression, count: int, with_headers: bool) -> bytes:
    builder = BatchBuilder(codec)
    for i in range(count):
        headers = [("h", b"x" * i), ("n", None)] if with_headers and i % 2 else []
        builder.append(
            b"value-%d" % i if i % 3 else None,
            key=b"k%d" % i if i % 2 else None,
            timestamp_ms=1_000 + i,
            headers=headers,
        )
    batch = bytearray(builder.build())
    stamp(batch, 100, 3)
    return bytes(batch)


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(21, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(21, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(21, 10_000), st.integers(1, 8)),
    st.tuples(
        st.just("int32"),
        st.integers(21, 10_000),
        st.sampled_from([-(2**31), -5, -1, 2**31 - 1, 0, 1, 7, 64]),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from(list(Compression)),
    count=st.integers(1, 12),
    with_headers=st.booleans(),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    raw_payload=st.booleans(),
)
def test_mutated_batches_with_a_valid_crc_raise_only_typed_errors(
    codec: Compression,
    count: int,
    with_headers: bool,
    mutations: list[tuple[str, int, object]],
    raw_payload: bool,
) -> None:
    good = _valid_batch(codec, count, with_headers)
    expected = list(range(100, 100 + count))
    if raw_payload and codec is not Compression.NONE:
        # mutate the decompressed records, then recompress: the record parser sees the lies
        records = bytearray(_valid_batch(Compression.NONE, count, with_headers))
        base = HEADER_BYTES
    else:
        records = bytearray(good)
        base = 21
    for kind, at, arg in mutations:
        at = base + (at - 21) % max(1, len(records) - base)
        match kind:
            case "set":
                assert isinstance(arg, int)
                records[at : at + 1] = bytes([arg])
            case "insert":
                assert isinstance(arg, bytes)
                records[at:at] = arg
            case "delete":
                assert isinstance(arg, int)
                del records[at : at + arg]
            case "int32":
                assert isinstance(arg, int)
                records[at : at + 4] = struct.pack(">i", arg)
    if raw_payload and codec is not Compression.NONE:
        header = bytearray(good[:HEADER_BYTES])
        compressed = _compress_like(codec, bytes(records[HEADER_BYTES:]))
        records = header + compressed
    batch = _recrc(records)
    try:
        offsets = decode_all(batch, uncompressed_bytes_max=1 << 20)
    except CorruptRecordError as exc:
        assert exc.offset in (None, struct.unpack_from(">q", batch)[0])
        return
    # a mutation may land in a value or a timestamp: whatever decodes is whole and in order
    assert offsets == expected or offsets == list(range(100, 100 + len(offsets)))


def _compress_like(codec: Compression, data: bytes) -> bytes:
    match codec:
        case Compression.GZIP:
            return zlib.compress(data, wbits=31)
        case Compression.SNAPPY:
            return bytes(snappy.compress(data))
        case Compression.LZ4:
            return bytes(lz4.frame.compress(data))
        case _:
            return zstandard.ZstdCompressor().compress(data)


def test_build_batch_round_trip_is_unchanged() -> None:
    batch = build_batch([b"a", None, b"c"], timestamp_ms=5, keys=[None, b"k", None])
    records = list(iter_records(batch))
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, None, b"a"),
        (1, b"k", None),
        (2, None, b"c"),
    ]
