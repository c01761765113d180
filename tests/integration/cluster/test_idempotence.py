"""Idempotent producers on real clusters: lost answers, leader kills and restarts never store a
batch twice, and a retry gets its original offsets back."""

from __future__ import annotations

import time

import pytest

from raftlog.client import Admin, Consumer, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import broker_pb2, broker_pb2_grpc, common_pb2
from raftlog.segments import BatchBuilder

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

LOSSY = {
    "timeouts": {
        "session_timeout_ms": 1500,
        "heartbeat_interval_ms": 150,
        "replica_lag_ms_max": 3000,
    },
    "testing": {"drop_produce_responses": 0.4},
}


def read_all(cluster: LocalCluster, topic: str, at_least: int) -> list:  # type: ignore[type-arg]
    with Consumer(
        cluster.bootstrap, auto_offset_reset="earliest", security=cluster.security
    ) as consumer:
        consumer.assign_topic(topic)
        got: list = []  # type: ignore[type-arg]
        deadline = time.monotonic() + 30
        # distinct values: with duplicates stored, a count of records reaches the goal early
        while len({r.value for r in got}) < at_least and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=500)
        got += consumer.poll(timeout_ms=500)
    return got


def produce_through_lost_answers(
    cluster: LocalCluster,
    topic: str,
    idempotent: bool,
    count: int,
    kill: object = None,
    stats: dict[str, int] | None = None,
) -> list:  # type: ignore[type-arg]
    with Producer(
        cluster.bootstrap,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=0,
        batch_bytes_max=1024,
        request_timeout_ms=3000,
        delivery_timeout_ms=60_000,
        retry_backoff_ms=20,
        security=cluster.security,
    ) as producer:
        futures = []
        for i in range(count):
            futures.append(producer.send(topic, f"v{i}".encode(), key=str(i % 7).encode()))
            if i == count // 2 and callable(kill):
                kill()
        producer.flush(90)
        if stats is not None:
            stats.update(producer.stats)
        return [f.result() for f in futures]


def test_lost_answers_are_retried_and_stored_once_at_their_original_offsets(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **LOSSY)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("idem", 2, 3, min_insync_replicas=2)
        admin.create_topic("plain", 2, 3, min_insync_replicas=2)
    acked = produce_through_lost_answers(cluster, "idem", True, 400)
    got = read_all(cluster, "idem", 400)
    values = [r.value for r in got]
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(400))  # each exactly once
    where = {(r.partition, r.offset): r.value for r in got}
    assert all(where[(m.partition, m.offset)] == f"v{i}".encode() for i, m in enumerate(acked))
    # the control: without idempotence the same lost answers store retries twice
    stats: dict[str, int] = {}
    produce_through_lost_answers(cluster, "plain", False, 400, stats=stats)
    assert stats["retries"] > 0, stats
    plain = [r.value for r in read_all(cluster, "plain", 400)]
    assert len(plain) > len(set(plain)) == 400


def test_a_retry_to_the_next_leader_is_deduplicated(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, **LOSSY)
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic("fail", 1, 3, min_insync_replicas=2)
        victim = admin.describe_topic("fail").partitions[0].leader
    acked = produce_through_lost_answers(
        cluster, "fail", True, 300, kill=lambda: cluster.kill(victim)
    )
    got = read_all(cluster, "fail", 300)
    values = [r.value for r in got]
    assert len(values) == len(set(values)) == 300
    where = {r.offset: r.value for r in got}
    assert all(where[m.offset] == f"v{i}".encode() for i, m in enumerate(acked))


def test_dedupe_survives_a_restart_of_every_broker(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("restart", 1, 3, min_insync_replicas=2)

    def leader_stub() -> broker_pb2_grpc.BrokerStub:
        # between elections the metadata names no leader (-1): a client waits for one
        waited_until = time.monotonic() + 30
        while (leader := admin.describe_topic("restart").partitions[0].leader) < 0:
            assert time.monotonic() < waited_until, "the partition stayed without a leader"
            time.sleep(0.1)
        return broker_pb2_grpc.BrokerStub(cluster.security.channel(cluster.nodes[leader].grpc))

    ids = leader_stub().InitProducerId(broker_pb2.InitProducerIdRequest(producer_id=-1))
    assert ids.error.code == 0 and ids.producer_id >= 0
    builder = BatchBuilder(
        producer_id=ids.producer_id, producer_epoch=ids.producer_epoch, base_sequence=0
    )
    for i in range(5):
        builder.append(f"r{i}".encode(), timestamp_ms=1)
    batch = builder.build()

    def send() -> broker_pb2.PartitionProduceResult:
        request = broker_pb2.ProduceRequest(
            acks=-1,
            timeout_ms=5000,
            partitions=[broker_pb2.PartitionRecords(topic="restart", partition=0, records=batch)],
        )
        return leader_stub().Produce(request, timeout=10).partitions[0]

    first = send()
    assert first.error.code == 0 and (first.base_offset, first.last_offset) == (0, 4)
    again = send()
    assert again.error.code == common_pb2.DUPLICATE_SEQUENCE_NUMBER
    assert (again.base_offset, again.last_offset) == (0, 4)
    admin.close()
    cluster.down()
    cluster.up(3, cluster.base_port)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.wait_for_topic("restart", 1)
    deadline = time.monotonic() + 30  # every replica re-registered: wait for the full ISR again
    while len(admin.describe_topic("restart").partitions[0].isr) < 3:
        assert time.monotonic() < deadline, "the ISR did not recover after the restart"
        time.sleep(0.1)
    after = send()
    retriable = (
        common_pb2.NOT_LEADER_OR_FOLLOWER,
        common_pb2.LEADER_NOT_AVAILABLE,
        common_pb2.NOT_ENOUGH_REPLICAS,
    )
    while after.error.code in retriable:
        # the ISR in the metadata may predate the restart: the leader may still be loading its
        # replicas, or not have heard from its followers yet (its own ISR is then itself alone:
        # NOT_ENOUGH_REPLICAS, checked before the duplicate as Kafka does) — retriable answers,
        # as a client would retry them
        assert time.monotonic() < deadline, f"no leader took the retry: {after}"
        time.sleep(0.1)
        after = send()
    assert after.error.code == common_pb2.DUPLICATE_SEQUENCE_NUMBER
    assert (after.base_offset, after.last_offset) == (0, 4)
    # the next sequence appends; a gap is refused; an older epoch is fenced
    builder = BatchBuilder(producer_id=ids.producer_id, producer_epoch=0, base_sequence=9)
    builder.append(b"gap", timestamp_ms=1)
    batch = builder.build()
    assert send().error.code == common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER
    bumped = leader_stub().InitProducerId(
        broker_pb2.InitProducerIdRequest(producer_id=ids.producer_id, producer_epoch=0)
    )
    builder = BatchBuilder(
        producer_id=ids.producer_id, producer_epoch=bumped.producer_epoch, base_sequence=0
    )
    builder.append(b"new epoch", timestamp_ms=1)
    batch = builder.build()
    assert send().error.code == 0
    builder = BatchBuilder(producer_id=ids.producer_id, producer_epoch=0, base_sequence=5)
    builder.append(b"zombie", timestamp_ms=1)
    batch = builder.build()
    assert send().error.code == common_pb2.PRODUCER_FENCED
    values = [r.value for r in read_all(cluster, "restart", 6)]
    assert values == [b"r0", b"r1", b"r2", b"r3", b"r4", b"new epoch"]
    admin.close()
