"""Produce and fetch byte-rate quotas per principal, on a real broker: answers over the quota
are held and say so (throttle_time_ms); super users are not throttled."""

from __future__ import annotations

import time

import pytest

from raftlog.client import Acl, Admin
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import broker_pb2, broker_pb2_grpc
from raftlog.segments.batch import BatchBuilder

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

RATE = 1_000_000  # bytes per second


def _batch(size: int) -> bytes:
    builder = BatchBuilder()
    builder.append(b"x" * size, timestamp_ms=int(time.time() * 1000))
    return builder.build()


def _produce_for(cluster: LocalCluster, security: object, total: int) -> tuple[float, int]:
    """Produce ``total`` bytes in 250 kB batches; (seconds taken, largest throttle_time_ms)."""
    stub = broker_pb2_grpc.BrokerStub(security.channel(cluster.nodes[1].grpc))  # type: ignore[attr-defined]
    batch = _batch(250_000)
    started, throttled = time.monotonic(), 0
    for _ in range(total // len(batch)):
        answer = stub.Produce(
            broker_pb2.ProduceRequest(
                acks=1,
                timeout_ms=5000,
                partitions=[broker_pb2.PartitionRecords(topic="q", partition=0, records=batch)],
            ),
            timeout=60,
        )
        assert answer.partitions[0].error.code == 0, answer
        throttled = max(throttled, answer.throttle_time_ms)
    return time.monotonic() - started, throttled


def test_a_principal_over_its_produce_quota_is_slowed_to_it(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1, quotas={"producer_byte_rate": RATE, "consumer_byte_rate": RATE})
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("q", 1, 1, configs={"max.message.bytes": str(4 << 20)})
        admin.create_acls([Acl("User:slow", "topic", "q", "write")])
    took, throttled = _produce_for(cluster, cluster.client_security("slow"), 4_000_000)
    assert throttled > 0
    assert took >= 2.5  # 4 MB at 1 MB/s with a 1 MB burst: at least 3 s of held answers
    # the super user is not throttled: the same 4 MB goes through with no throttle at all
    _, admin_throttled = _produce_for(cluster, cluster.security, 4_000_000)
    assert admin_throttled == 0
