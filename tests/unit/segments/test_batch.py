"""The batch codec: round trips for every codec, and every kind of bad byte rejected."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.proto.codes import ErrorCode
from raftlog.segments import (
    HEADER_BYTES,
    BatchBuilder,
    Compression,
    CorruptRecordError,
    InvalidRecordError,
    MessageTooLargeError,
    build_batch,
    iter_batches,
    iter_records,
    read_header,
    validate_batch,
)
from raftlog.segments.batch import stamp, stamped_prefix


@pytest.mark.parametrize("codec", list(Compression))
def test_round_trip_every_codec(codec: Compression) -> None:
    builder = BatchBuilder(codec, producer_id=7, producer_epoch=2, base_sequence=40)
    builder.append(b"v0", key=b"k0", timestamp_ms=1_000)
    builder.append(None, key=None, timestamp_ms=990)  # a tombstone, earlier timestamp
    builder.append(b"x" * 5000, key=b"k2", timestamp_ms=1_007, headers=[("h", b"1"), ("n", None)])
    batch = builder.build()

    header = validate_batch(batch)
    assert header.record_count == 3
    assert header.last_offset_delta == 2
    assert header.compression is codec
    assert (header.first_timestamp, header.max_timestamp) == (1_000, 1_007)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 2, 40)
    assert header.last_sequence == 42

    records = list(iter_records(batch))
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.key for r in records] == [b"k0", None, b"k2"]
    assert [r.value for r in records] == [b"v0", None, b"x" * 5000]
    assert [r.timestamp_ms for r in records] == [1_000, 990, 1_007]
    assert records[2].headers == (("h", b"1"), ("n", None))


def test_compression_shrinks_repetitive_payloads() -> None:
    values = [b"the same sentence again and again " * 4] * 200
    plain = build_batch(values, timestamp_ms=0)
    for codec in (Compression.GZIP, Compression.ZSTD, Compression.LZ4, Compression.SNAPPY):
        assert len(build_batch(values, timestamp_ms=0, compression=codec)) < len(plain) // 4


def test_stamping_keeps_the_crc_valid() -> None:
    batch = bytearray(build_batch([b"a", b"b", b"c"], timestamp_ms=5))
    stamp(batch, base_offset=50, leader_epoch=9)
    header = validate_batch(batch)
    assert (header.base_offset, header.leader_epoch, header.last_offset) == (50, 9, 52)
    assert [r.offset for r in iter_records(batch)] == [50, 51, 52]  # the worked example
    assert stamped_prefix(batch, 50, 9) == bytes(batch[:16])


@pytest.mark.parametrize("position", [16, 17, 21, 23, 30, 45, 57, HEADER_BYTES, HEADER_BYTES + 9])
def test_any_flipped_byte_after_the_stamp_is_rejected(position: int) -> None:
    batch = bytearray(build_batch([b"hello", b"world"], timestamp_ms=1, keys=[b"a", b"b"]))
    batch[position] ^= 0x41
    with pytest.raises(CorruptRecordError):
        validate_batch(batch)


def test_length_mismatch_truncated_and_empty_input() -> None:
    batch = build_batch([b"hello"], timestamp_ms=1)
    with pytest.raises(CorruptRecordError, match="batch_length"):
        validate_batch(batch + b"\0")
    with pytest.raises(CorruptRecordError, match="batch_length"):
        validate_batch(batch[:-1])
    with pytest.raises(CorruptRecordError, match="header needs"):
        validate_batch(b"")
    with pytest.raises(CorruptRecordError, match="magic"):
        bad = bytearray(batch)
        bad[16] = 1
        validate_batch(bad)


def test_oversized_batch_is_message_too_large_before_any_parsing() -> None:
    batch = build_batch([b"x" * 2000], timestamp_ms=1)
    with pytest.raises(MessageTooLargeError) as info:
        validate_batch(batch, batch_bytes_max=1000)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert validate_batch(batch, batch_bytes_max=len(batch)).record_count == 1


def _rebuild_with(batch: bytes, **fields: int) -> bytes:
    """Change CRC-covered header fields and recompute the CRC, as a buggy producer would."""
    import crc32c

    names = [
        "base_offset", "batch_length", "leader_epoch", "magic", "crc", "attributes",
        "last_offset_delta", "first_timestamp", "max_timestamp", "producer_id",
        "producer_epoch", "base_sequence", "record_count",
    ]  # fmt: skip
    fmt = struct.Struct(">qiibIhiqqqhii")
    values = dict(zip(names, fmt.unpack_from(batch), strict=True))
    values.update(fields)
    raw = bytearray(fmt.pack(*(values[n] for n in names)) + batch[HEADER_BYTES:])
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    return bytes(raw)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"record_count": 0, "last_offset_delta": -1}, "record_count"),
        ({"last_offset_delta": 5}, "last_offset_delta"),
        ({"attributes": 7}, "codec"),
        ({"max_timestamp": 0, "first_timestamp": 10}, "max_timestamp"),
    ],
)
def test_well_formed_but_invalid_fields(fields: dict[str, int], match: str) -> None:
    batch = _rebuild_with(build_batch([b"a", b"b"], timestamp_ms=5), **fields)
    with pytest.raises(InvalidRecordError, match=match):
        validate_batch(batch)


def test_records_that_overrun_their_batch_are_corrupt_not_a_crash() -> None:
    batch = bytearray(build_batch([b"abc"], timestamp_ms=1))
    struct.pack_into(">i", batch, HEADER_BYTES, 10_000)  # first record's length
    with pytest.raises(CorruptRecordError):
        list(iter_records(bytes(batch)))
    garbage = _rebuild_with(build_batch([b"abc"], timestamp_ms=1), attributes=Compression.ZSTD)
    with pytest.raises(CorruptRecordError, match="zstd"):
        list(iter_records(garbage))


def test_iter_batches_stops_at_a_partial_tail_and_raises_on_garbage() -> None:
    a = build_batch([b"one"], timestamp_ms=1)
    b = build_batch([b"two", b"three"], timestamp_ms=2)
    positions = [p for p, _ in iter_batches(a + b + b[:30])]
    assert positions == [0, len(a)]
    with pytest.raises(CorruptRecordError):
        list(iter_batches(a + b"\xff" * 80))


def test_builder_rules() -> None:
    builder = BatchBuilder("zstd")
    assert builder.compression is Compression.ZSTD
    with pytest.raises(InvalidRecordError, match="empty"):
        builder.build()
    with pytest.raises(InvalidRecordError, match="unknown compression"):
        BatchBuilder("brotli")
    builder.append(b"a", timestamp_ms=0)
    with pytest.raises(InvalidRecordError, match="24 days"):
        builder.append(b"b", timestamp_ms=2**32)
    assert len(builder) == 1 and builder.size_bytes > HEADER_BYTES
    assert read_header(builder.build()).record_count == 1


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=20)),
            st.one_of(st.none(), st.binary(max_size=50)),
            st.lists(
                st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))),
                max_size=2,
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_fast_path_and_the_general_path_write_the_same_records(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
) -> None:
    builder = BatchBuilder()
    for i, (key, value, headers) in enumerate(records):
        builder.append(value, key=key, timestamp_ms=1000 + i, headers=headers)
    decoded = list(iter_records(builder.build()))
    assert [(r.key, r.value, list(r.headers)) for r in decoded] == [
        (k, v, [(hk, hv) for hk, hv in h]) for k, v, h in records
    ]
    assert [r.timestamp_ms for r in decoded] == [1000 + i for i in range(len(records))]
