"""A hostile producer on a real broker: batches with a valid header and CRC whose records lie, and
a decompression bomb, stored through the raw Produce RPC (the broker never parses records), then
read by the stock Consumer: good records first, a typed error at each bad batch, a seek past."""

from __future__ import annotations

import struct
import time
import zlib

import crc32c
import pytest

from raftlog.client import Admin, Consumer
from raftlog.client.errors import CorruptBatchError
from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.segments import HEADER_BYTES, build_batch

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

_TAIL = struct.Struct(">hiqqqhii")


def forged(count: int, payload: bytes, codec: int = 0) -> bytes:
    tail = _TAIL.pack(codec, count - 1, 5, 5, -1, -1, -1, count)
    crc = crc32c.crc32c(payload, crc32c.crc32c(tail))
    head = struct.pack(">qiibI", 0, HEADER_BYTES - 12 + len(payload), -1, 2, crc)
    return head + tail + payload


def test_a_consumer_survives_lying_batches_and_a_bomb_stored_by_the_broker(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic("lies", 1, 1)
    leader = admin.describe_topic("lies").partitions[0].leader
    stub = broker_pb2_grpc.BrokerStub(cluster.security.channel(cluster.nodes[leader].grpc))

    def produce(records: bytes) -> None:
        deadline = time.monotonic() + 20
        while True:  # bounded: the new partition's leader may need a moment to open it
            answer = stub.Produce(
                broker_pb2.ProduceRequest(
                    acks=-1,
                    timeout_ms=5000,
                    partitions=[
                        broker_pb2.PartitionRecords(topic="lies", partition=0, records=records)
                    ],
                )
            )
            code = answer.partitions[0].error.code
            if code == 0:
                return
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)

    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join([deflate.compress(bytes(1 << 20)) for _ in range(32)] + [deflate.flush()])
    produce(build_batch([b"a0", b"a1", b"a2"], timestamp_ms=5))  # offsets 0-2
    produce(forged(3, build_batch([b"x", b"y"], timestamp_ms=5)[HEADER_BYTES:]))  # 3-5: says 3
    produce(forged(3, bomb, codec=1))  # 6-8: 32 MiB of zeros in 32 KB of gzip
    produce(build_batch([b"b9", b"b10"], timestamp_ms=5))  # 9-10

    with Consumer(
        cluster.bootstrap,
        fetch_max_wait_ms=100,
        batch_uncompressed_bytes_max=4 << 20,
        security=cluster.security,
    ) as consumer:
        consumer.assign([("lies", 0)])
        got = []
        errors: list[CorruptBatchError] = []
        for _ in range(40):  # bounded
            try:
                got += [(r.offset, r.value) for r in consumer.poll(timeout_ms=300)]
            except CorruptBatchError as exc:
                errors.append(exc)
                assert consumer.position(("lies", 0)) == exc.offset
                assert exc.next_offset is not None
                consumer.seek(("lies", 0), exc.next_offset)
            if len(got) >= 5:
                break
    assert got == [(0, b"a0"), (1, b"a1"), (2, b"a2"), (9, b"b9"), (10, b"b10")]
    assert [(e.offset, e.next_offset) for e in errors] == [(3, 6), (6, 9)]
    assert "inflates past the 4194304 byte limit" in str(errors[1])
