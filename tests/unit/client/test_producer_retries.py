"""The Producer's retry rules against a scripted in-process broker (gRPC on 127.0.0.1).

The scripted broker is a test double for one gRPC service, not the product's broker: it lets a
test decide each Produce answer, to check what the client does with it. It listens in plaintext,
which every client here asks for by name (``PLAINTEXT``): retries, not transport security, are
what is tested.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from raftlog.client import ClientSecurity, ClusterMetadata, DeliveryTimeoutError, Producer
from raftlog.client.errors import MessageTooLargeError
from raftlog.proto import broker_pb2, broker_pb2_grpc, common_pb2
from raftlog.segments import iter_batches, iter_records

Answer = Callable[[int], tuple[int, str]]  # attempt number → (error code, message)
PLAINTEXT = ClientSecurity.plaintext()


class ScriptedBroker(broker_pb2_grpc.BrokerServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.address = ""
        self.attempts = 0
        self.log: list[bytes] = []  # values appended, in order
        self.lock = threading.Lock()
        self.metadata_calls = 0

    def Metadata(self, request: Any, context: Any) -> broker_pb2.MetadataResponse:
        self.metadata_calls += 1
        return broker_pb2.MetadataResponse(
            brokers=[broker_pb2.BrokerMetadata(broker_id=1, address=self.address)],
            controller_id=1,
            topics=[
                broker_pb2.TopicMetadata(
                    name="t",
                    partitions=[
                        broker_pb2.PartitionMetadata(partition=0, leader=1, replicas=[1], isr=[1])
                    ],
                )
            ],
        )

    def Produce(self, request: Any, context: Any) -> broker_pb2.ProduceResponse:
        with self.lock:
            self.attempts += 1
            code, message = self.answer(self.attempts)
            results = []
            for p in request.partitions:
                if code:
                    results.append(
                        broker_pb2.PartitionProduceResult(
                            topic=p.topic,
                            partition=p.partition,
                            error=common_pb2.Error(code=code, message=message),
                            base_offset=-1,
                        )
                    )
                    continue
                base = len(self.log)
                for position, header in iter_batches(p.records):
                    batch = p.records[position : position + header.size_bytes]
                    self.log.extend(r.value or b"" for r in iter_records(batch))
                results.append(
                    broker_pb2.PartitionProduceResult(
                        topic=p.topic, partition=p.partition, base_offset=base
                    )
                )
            return broker_pb2.ProduceResponse(partitions=results)


@pytest.fixture
def broker(grpc_server: Callable[..., str]) -> Callable[[Answer], ScriptedBroker]:
    def start(answer: Answer) -> ScriptedBroker:
        servicer = ScriptedBroker(answer)
        servicer.address = grpc_server(
            lambda server: broker_pb2_grpc.add_BrokerServicer_to_server(servicer, server)
        )
        return servicer

    return start


def test_retriable_errors_are_retried_and_order_is_kept(broker: Any) -> None:
    fails = {1, 2, 5}
    scripted = broker(
        lambda n: (common_pb2.NOT_LEADER_OR_FOLLOWER, "moved") if n in fails else (0, "")
    )
    metadata = ClusterMetadata(scripted.address, refresh_backoff_ms=0, security=PLAINTEXT)
    with Producer(
        scripted.address,
        enable_idempotence=False,
        linger_ms=1,
        retry_backoff_ms=5,
        metadata=metadata,
    ) as producer:
        sent = [producer.send("t", f"{i}".encode()) for i in range(50)]
        producer.flush(10)
        offsets = [f.result(5).offset for f in sent]
        assert producer.stats["retries"] == len([n for n in fails if n <= scripted.attempts]) >= 2
    assert scripted.log == [f"{i}".encode() for i in range(50)]  # each once, in order
    assert offsets == list(range(50))
    assert scripted.metadata_calls >= 2  # a stale-leader answer refreshes metadata


def test_a_fatal_error_fails_at_once_without_retries(broker: Any) -> None:
    scripted = broker(lambda n: (common_pb2.MESSAGE_TOO_LARGE, "too big"))
    with Producer(
        scripted.address, enable_idempotence=False, linger_ms=1, security=PLAINTEXT
    ) as producer:
        future = producer.send("t", b"x")
        with pytest.raises(MessageTooLargeError, match="too big"):
            future.result(5)
    assert scripted.attempts == 1


def test_retries_stop_at_the_delivery_timeout_with_the_last_error(broker: Any) -> None:
    scripted = broker(lambda n: (common_pb2.NOT_ENOUGH_REPLICAS, "isr 1 < 2"))
    with Producer(
        scripted.address,
        enable_idempotence=False,
        linger_ms=1,
        request_timeout_ms=200,
        delivery_timeout_ms=600,
        retry_backoff_ms=20,
        retry_backoff_max_ms=50,
        security=PLAINTEXT,
    ) as producer:
        future = producer.send("t", b"x")
        with pytest.raises(Exception) as caught:
            future.result(5)
    assert isinstance(caught.value, DeliveryTimeoutError)
    assert "NOT_ENOUGH_REPLICAS" in str(caught.value)
    assert 3 <= scripted.attempts <= 40  # backed off, bounded


def test_back_pressure_blocks_then_raises_when_the_buffer_stays_full(broker: Any) -> None:
    gate = threading.Event()

    def answer(n: int) -> tuple[int, str]:
        gate.wait(5)  # the broker is stuck: nothing is acknowledged, the buffer fills
        return (0, "")

    scripted = broker(answer)
    from raftlog.client import BufferFullError

    producer = Producer(
        scripted.address,
        enable_idempotence=False,
        linger_ms=0,
        batch_bytes_max=1024,
        buffer_bytes_max=2048,
        max_block_ms=300,
        security=PLAINTEXT,
    )
    try:
        with pytest.raises(BufferFullError):
            for _ in range(100):
                producer.send("t", b"y" * 200)
    finally:
        gate.set()
        producer.close(5)
