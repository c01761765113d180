"""The Consumer against batches that do not decode, served by a scripted in-process broker.

A hostile producer can get a batch stored whose header and CRC are valid but whose records lie
(the broker never parses records). The consumer must hand over every good record before it,
then raise CorruptBatchError at the bad offset, keep its position there until the application
seeks, and lose nothing. The scripted broker is a test double for the gRPC service (on
127.0.0.1), not the product's broker: it serves a fixed log of batches, in plaintext (which the
client must ask for by name: what is tested here is decoding, not transport security).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

import crc32c
import pytest

from raftlog.client import ClientSecurity, Consumer, RaftlogError
from raftlog.client.errors import CorruptBatchError, CorruptMessageError
from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.segments import HEADER_BYTES, build_batch
from raftlog.segments.batch import stamp

_HEAD = struct.Struct(">qiibI")
_TAIL = struct.Struct(">hiqqqhii")


def good(base_offset: int, count: int, partition: int = 0) -> bytes:
    batch = bytearray(
        build_batch(
            [f"p{partition}-{base_offset + i}".encode() for i in range(count)], timestamp_ms=5
        )
    )
    stamp(batch, base_offset, 1)
    return bytes(batch)


def forged(base_offset: int, count: int, payload: bytes, codec: int = 0) -> bytes:
    """Valid header and CRC over ``payload``: what the broker stores without parsing."""
    tail = _TAIL.pack(codec, count - 1, 5, 5, -1, -1, -1, count)
    crc = crc32c.crc32c(payload, crc32c.crc32c(tail))
    return _HEAD.pack(base_offset, HEADER_BYTES - 12 + len(payload), 1, 2, crc) + tail + payload


def lying_count(base_offset: int) -> bytes:
    """Says 3 records, holds 2."""
    honest = good(base_offset, 2)
    return forged(base_offset, 3, honest[HEADER_BYTES:])


def garbage(base_offset: int) -> bytes:
    return forged(base_offset, 3, b"\xde\xad\xbe\xef" * 9)


def gzip_bomb(base_offset: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    payload = b"".join([deflate.compress(chunk) for _ in range(16)] + [deflate.flush()])
    return forged(base_offset, 3, payload, codec=1)


class LogBroker(broker_pb2_grpc.BrokerServicer):
    """Serves topic ``t`` (partitions 0 and 1) from fixed lists of stamped batches."""

    def __init__(self, logs: dict[int, list[bytes]]) -> None:
        self.logs = logs
        self.address = ""
        self.fetches = 0

    def Metadata(self, request: Any, context: Any) -> broker_pb2.MetadataResponse:
        return broker_pb2.MetadataResponse(
            brokers=[broker_pb2.BrokerMetadata(broker_id=1, address=self.address)],
            controller_id=1,
            topics=[
                broker_pb2.TopicMetadata(
                    name="t",
                    partitions=[
                        broker_pb2.PartitionMetadata(partition=p, leader=1, replicas=[1], isr=[1])
                        for p in sorted(self.logs)
                    ],
                )
            ],
        )

    def ListOffsets(self, request: Any, context: Any) -> broker_pb2.ListOffsetsResponse:
        return broker_pb2.ListOffsetsResponse(
            partitions=[
                broker_pb2.ListOffsetsResult(topic=p.topic, partition=p.partition, offset=0)
                for p in request.partitions
            ]
        )

    def Fetch(self, request: Any, context: Any) -> broker_pb2.FetchResponse:
        self.fetches += 1
        results = []
        for p in request.partitions:
            chunks = []
            for batch in self.logs[p.partition]:
                (base,) = struct.unpack_from(">q", batch)
                (last_delta,) = struct.unpack_from(">i", batch, 23)
                if base + last_delta >= p.fetch_offset:
                    chunks.append(batch)
            results.append(
                broker_pb2.FetchPartitionResult(
                    topic=p.topic, partition=p.partition, records=b"".join(chunks)
                )
            )
        return broker_pb2.FetchResponse(partitions=results)


@pytest.fixture
def serve(grpc_server: Callable[..., str]) -> Callable[[dict[int, list[bytes]]], LogBroker]:
    def start(logs: dict[int, list[bytes]]) -> LogBroker:
        servicer = LogBroker(logs)
        servicer.address = grpc_server(
            lambda server: broker_pb2_grpc.add_BrokerServicer_to_server(servicer, server)
        )
        return servicer

    return start


def consumer_for(broker: LogBroker, **kwargs: Any) -> Consumer:
    return Consumer(
        broker.address, fetch_max_wait_ms=50, security=ClientSecurity.plaintext(), **kwargs
    )


def poll_values(consumer: Consumer, polls: int = 5) -> list[bytes | None]:
    out: list[bytes | None] = []
    for _ in range(polls):  # bounded: the scripted log is finite
        out.extend(r.value for r in consumer.poll(timeout_ms=200))
    return out


@pytest.mark.parametrize("bad", [lying_count, garbage, gzip_bomb], ids=lambda f: f.__name__)
def test_good_records_first_then_a_typed_error_at_the_bad_batch_until_a_seek(
    serve: Any, bad: Any
) -> None:
    broker = serve({0: [good(0, 3), good(3, 2), bad(5), good(8, 2)]})
    consumer = consumer_for(broker, batch_uncompressed_bytes_max=4 << 20)
    consumer.assign([("t", 0)])
    # every record before the bad batch comes out of one fetch, not lost with its traceback
    first = consumer.poll(timeout_ms=2_000)
    assert [r.offset for r in first] == [0, 1, 2, 3, 4]
    assert [r.value for r in first] == [f"p0-{i}".encode() for i in range(5)]
    for _ in range(3):  # and again on every poll: the position stays at the bad batch
        with pytest.raises(CorruptBatchError) as caught:
            consumer.poll(timeout_ms=200)
        error = caught.value
        assert (error.topic, error.partition, error.offset, error.next_offset) == ("t", 0, 5, 8)
        assert consumer.position(("t", 0)) == 5
    assert isinstance(error, CorruptMessageError) and isinstance(error, RaftlogError)
    assert error.name == "CORRUPT_MESSAGE" and error.code == 2
    assert not error.retriable
    assert "offset 5" in str(error)
    fetches = broker.fetches
    consumer.seek(("t", 0), error.next_offset)
    assert [r.offset for r in consumer.poll(timeout_ms=2_000)] == [8, 9]
    assert broker.fetches > fetches
    consumer.close()


def test_seeking_back_to_the_bad_offset_fetches_it_again(serve: Any) -> None:
    broker = serve({0: [good(0, 2), garbage(2)]})
    consumer = consumer_for(broker)
    consumer.assign([("t", 0)])
    assert [r.offset for r in consumer.poll(timeout_ms=2_000)] == [0, 1]
    with pytest.raises(CorruptBatchError):
        consumer.poll(timeout_ms=200)
    broker.logs[0][1] = good(2, 3)  # say a replica with a good copy took over
    consumer.seek(("t", 0), 2)
    assert [r.offset for r in consumer.poll(timeout_ms=2_000)] == [2, 3, 4]
    consumer.close()


def test_a_bad_batch_in_one_partition_loses_nothing_of_another(serve: Any) -> None:
    broker = serve({0: [good(0, 2), lying_count(2)], 1: [good(0, 4, partition=1)]})
    consumer = consumer_for(broker)
    consumer.assign([("t", 0), ("t", 1)])
    got: list[tuple[int, int]] = []
    error = None
    for _ in range(10):  # bounded
        try:
            got.extend((r.partition, r.offset) for r in consumer.poll(timeout_ms=300))
        except CorruptBatchError as exc:
            error = exc
            break
    assert error is not None and (error.partition, error.offset) == (0, 2)
    assert sorted(got) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]
    consumer.close()


def test_a_bad_batch_is_never_half_delivered(serve: Any) -> None:
    # records 5 and 6 decode; the batch claims a third it does not hold: none of the three
    # is returned, so skipping the batch or fetching it again never duplicates a record
    broker = serve({0: [good(0, 5), lying_count(5)]})
    consumer = consumer_for(broker)
    consumer.assign([("t", 0)])
    assert [r.offset for r in consumer.poll(timeout_ms=2_000)] == [0, 1, 2, 3, 4]
    with pytest.raises(CorruptBatchError):
        poll_values(consumer, polls=2)
    consumer.close()
