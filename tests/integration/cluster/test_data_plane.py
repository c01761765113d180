"""The data plane on real 3-broker clusters: acks=all, ISR shrink and expand, failover without
losing an acknowledged record, follower truncation, typed errors for bad input."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from raftlog.client import Admin, ClientSecurity, Consumer, DeliveryTimeoutError, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.proto import broker_pb2, broker_pb2_grpc, common_pb2
from raftlog.segments import Log, build_batch
from raftlog.segments.clock import SYSTEM_CLOCK

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

FAST = {
    "timeouts": {
        "session_timeout_ms": 1500,
        "heartbeat_interval_ms": 150,
        "replica_lag_ms_max": 3000,
    }
}


def wait_until(condition, timeout_s: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def consume_all(  # type: ignore[type-arg]
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    *,
    security: ClientSecurity,
) -> list:
    with Consumer(bootstrap, auto_offset_reset="earliest", security=security) as consumer:
        consumer.assign_topic(topic)
        got: list = []  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=500)
        # and nothing more arrives
        got += consumer.poll(timeout_ms=300)
    return got


def stub_for(cluster: LocalCluster, broker_id: int) -> broker_pb2_grpc.BrokerStub:
    return broker_pb2_grpc.BrokerStub(cluster.security.channel(cluster.nodes[broker_id].grpc))


def test_acks_all_then_one_follower_down_then_two_then_both_back(
    make_cluster: ClusterFactory,
) -> None:
    # five brokers (five metadata voters), so the quorum survives two replicas going down
    cluster = make_cluster(5, **FAST)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic("t", 1, 3, min_insync_replicas=2)
    partition = admin.describe_topic("t").partitions[0]
    leader = partition.leader
    followers = [b for b in partition.replicas if b != leader]
    with Producer(
        cluster.bootstrap,
        request_timeout_ms=3000,
        delivery_timeout_ms=4000,
        security=cluster.security,
    ) as p:
        acked = [(v, p.send("t", v).result(10)) for v in values("a", 200)]
        # one follower down: the controller fences it, the ISR shrinks, writes go on
        cluster.kill(followers[0])
        wait_until(
            lambda: (
                admin.describe_topic("t").partitions[0].isr
                == tuple(
                    b for b in admin.describe_topic("t").partitions[0].replicas if b != followers[0]
                )
            ),
            what="ISR without the first follower",
        )
        acked += [(v, p.send("t", v).result(10)) for v in values("b", 200)]
        # two down: below min ISR → NOT_ENOUGH_REPLICAS and nothing appended
        cluster.kill(followers[1])
        # the leader itself must have applied the shrink (metadata reaches brokers one by one)
        wait_until(
            lambda: _leader_isr(cluster, leader) == [leader],
            what="ISR of the leader alone, as the leader sees it",
        )
        leo_before = _leo(cluster, leader)
        response = stub_for(cluster, leader).Produce(
            broker_pb2.ProduceRequest(
                acks=-1,
                timeout_ms=1000,
                partitions=[
                    broker_pb2.PartitionRecords(
                        topic="t", partition=0, records=build_batch([b"x"], timestamp_ms=1)
                    )
                ],
            )
        )
        assert response.partitions[0].error.code == common_pb2.NOT_ENOUGH_REPLICAS
        assert _leo(cluster, leader) == leo_before
        with pytest.raises(DeliveryTimeoutError, match=r"NOT_ENOUGH_REPLICAS"):
            p.send("t", b"refused").result(10)
        # both back: they catch up and rejoin the ISR, writes succeed again
        cluster.start(followers[0])
        cluster.start(followers[1])
        wait_until(
            lambda: len(admin.describe_topic("t").partitions[0].isr) == 3, what="full ISR again"
        )
        acked += [(v, p.send("t", v).result(10)) for v in values("c", 100)]
    got = consume_all(cluster.bootstrap, "t", len(acked), security=cluster.security)
    by_offset = {r.offset: r.value for r in got}
    wrong = [
        (m.offset, v, by_offset.get(m.offset)) for v, m in acked if by_offset.get(m.offset) != v
    ]
    assert not wrong, f"{len(wrong)} acknowledged records not at their offsets, e.g. {wrong[:3]}"
    assert b"refused" not in by_offset.values()
    admin.close()


def values(tag: str, count: int) -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(count)]


def _leader_isr(cluster: LocalCluster, broker_id: int) -> list[int]:
    answer = stub_for(cluster, broker_id).DescribeReplicas(broker_pb2.DescribeReplicasRequest())
    return next(list(r.isr) for r in answer.replicas if r.topic == "t")


def _leo(cluster: LocalCluster, broker_id: int) -> int:
    answer = stub_for(cluster, broker_id).DescribeReplicas(broker_pb2.DescribeReplicasRequest())
    return next(r.log_end_offset for r in answer.replicas if r.topic == "t")


def test_kill_the_leader_under_load_keeps_every_acknowledged_record(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("load", 3, 3, min_insync_replicas=2)
    victim = admin.describe_topic("load").partitions[0].leader
    futures = []
    with Producer(
        cluster.bootstrap,
        linger_ms=2,
        request_timeout_ms=5000,
        delivery_timeout_ms=30_000,
        security=cluster.security,
    ) as producer:
        for i in range(6000):
            futures.append(producer.send("load", f"v{i}".encode(), key=str(i).encode()))
            if i == 3000:
                cluster.kill(victim)
        producer.flush(60)
    acked = [f.result() for f in futures if f.exception() is None]
    assert len(acked) == 6000  # retries carried every record across the failover
    topic = admin.describe_topic("load")
    assert all(p.leader != victim and p.leader >= 0 for p in topic.partitions)
    assert_acknowledged_in_place(cluster, "load", acked)
    admin.close()


def assert_acknowledged_in_place(cluster: LocalCluster, topic: str, acked: list) -> None:  # type: ignore[type-arg]
    """Record i (value ``v{i}``) was acknowledged at ``acked[i]``: read the topic and find each
    one, with its value, at its offset, and no offset twice."""
    got = consume_all(cluster.bootstrap, topic, len(acked), security=cluster.security)
    where = {(r.partition, r.offset): r.value for r in got}
    wrong = [
        (m, f"v{i}")
        for i, m in enumerate(acked)
        if where.get((m.partition, m.offset)) != f"v{i}".encode()
    ]
    assert not wrong, wrong[:5]
    assert len(where) == len(got)


def test_a_diverged_replica_truncates_and_converges(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("div", 1, 3, min_insync_replicas=2)
    old_leader = admin.describe_topic("div").partitions[0].leader
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        for i in range(50):
            producer.send("div", f"committed-{i}".encode()).result(10)
    # the followers stop fetching; the leader takes acks=1 writes only it holds, then dies
    followers = [b for b in (1, 2, 3) if b != old_leader]
    import os
    import signal

    for b in followers:
        os.kill(cluster.nodes[b].pid, signal.SIGSTOP)
    # a long-poll fetch sent before the stop may still be answered into the socket buffer:
    # let it expire empty (max wait 500 ms) so the followers really miss what comes next —
    # while staying well inside the session timeout, so nobody is fenced
    time.sleep(0.7)
    try:
        stub = stub_for(cluster, old_leader)
        for i in range(5):
            answer = stub.Produce(
                broker_pb2.ProduceRequest(
                    acks=1,
                    timeout_ms=1000,
                    partitions=[
                        broker_pb2.PartitionRecords(
                            topic="div",
                            partition=0,
                            records=build_batch([f"lost-{i}".encode()], timestamp_ms=1),
                        )
                    ],
                )
            )
            assert answer.partitions[0].error.code == 0
        cluster.kill(old_leader)
    finally:
        for b in followers:
            os.kill(cluster.nodes[b].pid, signal.SIGCONT)
    # a follower from the ISR takes over and writes new records at the same offsets
    wait_until(
        lambda: admin.describe_topic("div").partitions[0].leader in followers, what="a new leader"
    )
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        for i in range(20):
            producer.send("div", f"new-{i}".encode()).result(20)
    cluster.start(old_leader)
    wait_until(
        lambda: len(admin.describe_topic("div").partitions[0].isr) == 3,
        what="the old leader back in the ISR",
    )
    values = [r.value for r in consume_all(cluster.bootstrap, "div", 70, security=cluster.security)]
    assert not any(v.startswith(b"lost-") for v in values)
    assert len(values) == 70
    admin.close()
    cluster.down()
    digests = {b: _digest(cluster.dir / f"node{b}" / "logs" / "div-0") for b in (1, 2, 3)}
    assert len(set(digests.values())) == 1, digests


def _digest(directory: Path) -> str:
    log = Log(str(directory), clock=SYSTEM_CLOCK)
    h = hashlib.sha256()
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20)
        h.update(result.data)
        offset = result.next_offset
    log.close()
    return h.hexdigest()


def test_bad_input_gets_typed_errors_and_changes_nothing(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    admin = Admin(cluster.bootstrap, security=cluster.security)
    admin.create_topic("bad", 1, 3, min_insync_replicas=2, configs={"max.message.bytes": "4096"})
    topic = admin.describe_topic("bad")
    leader = topic.partitions[0].leader
    follower = next(b for b in (1, 2, 3) if b != leader)
    stub = stub_for(cluster, leader)
    good = build_batch([b"ok"], timestamp_ms=1)
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF

    def produce(records: bytes, topic: str = "bad", to: broker_pb2_grpc.BrokerStub = stub) -> int:
        answer = to.Produce(
            broker_pb2.ProduceRequest(
                acks=-1,
                timeout_ms=5000,
                partitions=[broker_pb2.PartitionRecords(topic=topic, partition=0, records=records)],
            )
        )
        return int(answer.partitions[0].error.code)

    # the topic is committed before the leader has applied it and opened its replica
    wait_until(lambda: _leo_of(stub) >= 0, 10.0, "the leader to open its replica")
    # a follower that has not applied the topic yet does not know it (UNKNOWN_TOPIC_OR_PARTITION)
    wait_until(lambda: _leo_of(stub_for(cluster, follower)) >= 0, 10.0, "the follower to open it")
    before = _leo_of(stub)
    assert produce(b"\x00" * 10) == common_pb2.CORRUPT_MESSAGE  # malformed
    assert produce(bytes(corrupt)) == common_pb2.CORRUPT_MESSAGE  # CRC mismatch
    big = build_batch([b"x" * 10_000], timestamp_ms=1)
    assert produce(big) == common_pb2.MESSAGE_TOO_LARGE
    assert produce(good + bytes(corrupt)) == common_pb2.CORRUPT_MESSAGE  # one bad = none in
    assert produce(good, topic="nope") == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(good, to=stub_for(cluster, follower)) == common_pb2.NOT_LEADER_OR_FOLLOWER
    assert _leo_of(stub) == before
    fetch = stub.Fetch(
        broker_pb2.FetchRequest(
            replica_id=-1,
            max_wait_ms=0,
            partitions=[
                broker_pb2.FetchPartition(
                    topic="bad",
                    partition=0,
                    fetch_offset=-5,
                    current_leader_epoch=-1,
                    last_fetched_epoch=-1,
                )
            ],
        )
    )
    assert fetch.partitions[0].error.code == common_pb2.OFFSET_OUT_OF_RANGE
    assert produce(good) == 0
    assert _leo_of(stub) == before + 1
    acks = stub.Produce(
        broker_pb2.ProduceRequest(
            acks=7, partitions=[broker_pb2.PartitionRecords(topic="bad", partition=0, records=good)]
        )
    )
    assert acks.partitions[0].error.code == common_pb2.INVALID_REQUIRED_ACKS
    admin.close()


def _leo_of(stub: broker_pb2_grpc.BrokerStub) -> int:
    answer = stub.DescribeReplicas(broker_pb2.DescribeReplicasRequest())
    return next((r.log_end_offset for r in answer.replicas if r.topic == "bad"), -1)
