"""Our batches are Kafka's: kafka-python (an independent implementation of Kafka's v2 record
batch) reads every batch we build — keys, values, headers, timestamps, offsets, CRC — and we read
every batch it builds, for each compression codec both sides support alike."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from raftlog.segments import BatchBuilder, Compression, iter_records

records = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=300),  # key
        st.none() | st.binary(max_size=300),  # value
        st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3),
        st.integers(0, 10**6),  # timestamp delta
    ),
    min_size=1,
    max_size=20,
)
BASE_TS = 1_700_000_000_000
# Kafka's numbering, Kafka's framing of each codec (snappy: we write raw blocks, which Kafka's
# readers take, and read xerial-framed ones too, which Kafka's Java client and kafka-python write)
CODECS = list(Compression)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=40, deadline=None)
@given(batch=records)
def test_kafka_python_reads_our_batches(codec: Compression, batch: list) -> None:  # type: ignore[type-arg]
    builder = BatchBuilder(codec)
    for key, value, headers, delta in batch:
        builder.append(value, key=key, timestamp_ms=BASE_TS + delta, headers=headers)
    theirs = DefaultRecordBatch(bytearray(builder.build()))
    assert theirs.validate_crc()
    read = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in theirs]
    assert read == [
        (i, key, value, headers, BASE_TS + delta)
        for i, (key, value, headers, delta) in enumerate(batch)
    ]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=40, deadline=None)
@given(batch=records)
def test_we_read_kafka_python_batches(codec: Compression, batch: list) -> None:  # type: ignore[type-arg]
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 24,
    )
    for i, (key, value, headers, delta) in enumerate(batch):
        builder.append(i, timestamp=BASE_TS + delta, key=key, value=value, headers=headers)
    read = [
        (r.offset, r.key, r.value, list(r.headers), r.timestamp_ms)
        for r in iter_records(bytes(builder.build()))
    ]
    assert read == [
        (i, key, value, [tuple(h) for h in headers], BASE_TS + delta)
        for i, (key, value, headers, delta) in enumerate(batch)
    ]
