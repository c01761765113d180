"""Observability on a real 3-broker cluster: every broker's /metrics scraped and parsed with
prometheus-client's own parser while records flow, a broker dies and comes back; the gRPC health
service of a starting, a serving and a restarted broker; the services listed by reflection."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from raftlog.client import Admin, Consumer, Producer
from raftlog.client.local_cluster import LocalCluster
from raftlog.client.metrics import ClientMetrics
from raftlog.client.observability import Samples, sum_of
from raftlog.client.observability import scrape as scrape_url
from raftlog.cluster.broker_metrics import SNAPSHOT_REUSE_S

from ..conftest import ClusterFactory

pytestmark = pytest.mark.integration

FAST = {
    "timeouts": {
        "session_timeout_ms": 1500,
        "heartbeat_interval_ms": 150,
        "replica_lag_ms_max": 3000,
    }
}


def scrape(cluster: LocalCluster, broker_id: int) -> Samples:
    """Every sample of one broker's /metrics, parsed by prometheus-client's parser."""
    return scrape_url(f"http://{cluster.nodes[broker_id].metrics}/metrics")


def cluster_total(cluster: LocalCluster, brokers: list[int], name: str, **labels: str) -> float:
    return sum(sum_of(scrape(cluster, b), name, **labels) for b in brokers)


def wait_until(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_metrics_follow_traffic_a_dying_broker_and_its_return(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **FAST)
    everyone = sorted(cluster.nodes)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic("m", 3, 3, min_insync_replicas=2)
    wait_until(
        lambda: cluster_total(cluster, everyone, "raftlog_leader_partitions") == 3,
        what="three led partitions",
    )
    assert cluster_total(cluster, everyone, "raftlog_active_controller") == 1
    assert cluster_total(cluster, everyone, "raftlog_raft_role", role="leader") == 1
    assert cluster_total(cluster, everyone, "raftlog_under_replicated_partitions") == 0

    values = [f"record-{i:04d}".encode() for i in range(300)]
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        for future in [producer.send("m", v, partition=i % 3) for i, v in enumerate(values)]:
            future.result(20)
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest", security=cluster.security) as c:
        c.assign_topic("m")
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < len(values) and time.monotonic() < deadline:
            got += c.poll(timeout_ms=500)
    assert sorted(r.value for r in got) == values

    time.sleep(SNAPSHOT_REUSE_S)  # no scrape answers from a snapshot older than the traffic
    before = {b: scrape(cluster, b) for b in everyone}

    def everywhere(name: str, **labels: str) -> float:
        return sum(sum_of(page, name, **labels) for page in before.values())

    appended = everywhere("raftlog_records_in_total", topic="m")
    assert appended == len(values)  # each record counted once, by the leader that took it
    assert everywhere("raftlog_bytes_in_total", topic="m") > 300 * 11
    assert everywhere("raftlog_records_out_total", topic="m") >= 300
    assert everywhere("raftlog_bytes_out_total", topic="m") > 0
    # every byte a leader appended went to two followers: each side counts it
    out = everywhere("raftlog_replication_bytes_total", direction="out")
    into = everywhere("raftlog_replication_bytes_total", direction="in")
    assert out == into > 0
    assert everywhere("raftlog_requests_total", rpc="Produce", code="NONE") > 0
    assert everywhere("raftlog_request_duration_seconds_count", rpc="Produce") > 0
    assert all(
        sum_of(s, "raftlog_log_size_bytes", topic="m") > 0 for s in before.values()
    )  # every broker holds a replica of every partition
    assert everywhere("raftlog_log_segments", topic="m") == 9

    # a broker that leads a partition and is not the controller dies
    controller = next(b for b, s in before.items() if sum_of(s, "raftlog_active_controller") == 1)
    victim = next(
        b for b in everyone if b != controller and sum_of(before[b], "raftlog_leader_partitions")
    )
    alive = [b for b in everyone if b != victim]
    elections_before = cluster_total(cluster, alive, "raftlog_leader_elections_total")
    shrinks_before = cluster_total(cluster, alive, "raftlog_isr_shrinks_total")
    cluster.kill(victim)
    wait_until(
        lambda: cluster_total(cluster, alive, "raftlog_under_replicated_partitions") == 3,
        what="three under-replicated partitions",
    )
    assert cluster_total(cluster, alive, "raftlog_leader_partitions") == 3  # all led again
    assert cluster_total(cluster, alive, "raftlog_leader_elections_total") > elections_before
    assert cluster_total(cluster, alive, "raftlog_unclean_leader_elections_total") == 0
    # the two partitions it followed shrank under their leaders; the one it led changed leader
    # (a new leader starts with the ISR it was elected with: no shrink of its own)
    assert cluster_total(cluster, alive, "raftlog_isr_shrinks_total") >= shrinks_before + 2
    assert cluster_total(cluster, alive, "raftlog_fenced_brokers") == 1
    assert cluster_total(cluster, alive, "raftlog_under_min_isr_partitions") == 0  # 2 of 3 left
    assert cluster_total(cluster, alive, "raftlog_offline_partitions") == 0

    expands_before = cluster_total(cluster, alive, "raftlog_isr_expands_total")
    cluster.start(victim)
    wait_until(
        lambda: cluster_total(cluster, everyone, "raftlog_under_replicated_partitions") == 0,
        what="no under-replicated partition after the broker's return",
    )
    assert cluster_total(cluster, everyone, "raftlog_isr_expands_total") >= expands_before + 3
    assert cluster_total(cluster, everyone, "raftlog_fenced_brokers") == 0


def health_of(cluster: LocalCluster, broker_id: int, service: str = "") -> int:
    with cluster.security.channel(cluster.nodes[broker_id].grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(answer.status)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_is_serving_only_when_registered_unfenced_and_caught_up(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **FAST)
    for broker in cluster.nodes:
        # the controller says all are unfenced; each broker's own metadata follows within moments
        wait_until(lambda b=broker: health_of(cluster, b) == SERVING, 10, f"{broker} SERVING")
        assert health_of(cluster, broker, "raftlog.v1.Broker") == SERVING
        assert health_of(cluster, broker, "raftlog.v1.GroupCoordinator") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health_of(cluster, 1, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    # a broker starting without a quorum to catch up with stays NOT_SERVING
    for broker in sorted(cluster.nodes):
        cluster.kill(broker)
    cluster.start(1, wait=False)

    def answers() -> int | None:
        try:
            return health_of(cluster, 1)
        except grpc.RpcError:
            return None  # not listening yet

    assert wait_until(lambda: answers() is not None, what="broker 1 listening") is not None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert answers() == NOT_SERVING
        time.sleep(0.2)
    # the quorum is back: it catches up, registers, is unfenced
    cluster.start(2, wait=False)
    cluster.start(3, wait=False)
    wait_until(lambda: answers() == SERVING, timeout_s=60, what="broker 1 SERVING")
    cluster.wait_ready(60)
    # the controller says all are unfenced; each broker's own metadata follows within moments
    wait_until(
        lambda: all(health_of(cluster, b) == SERVING for b in cluster.nodes), 10, "all SERVING"
    )


def test_a_paused_broker_fenced_meanwhile_says_not_serving_until_unfenced(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    for broker in (2, 3):
        wait_until(lambda b=broker: health_of(cluster, b) == SERVING, 10, f"{broker} SERVING")
    with cluster.security.channel(cluster.nodes[3].grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        assert next(watch).status == SERVING
        process = cluster._process(3)
        assert process is not None
        process.pause()
        try:
            wait_until(
                lambda: any(
                    b.broker_id == 3 and b.fenced for b in admin.describe_cluster().brokers
                ),
                what="broker 3 fenced",
            )
        finally:
            process.resume()
        seen = []
        for answer in watch:
            seen.append(answer.status)
            if answer.status == SERVING:
                break
        watch.cancel()
    assert seen == [NOT_SERVING, SERVING]

    # a broker told to stop says NOT_SERVING before it stops answering
    with cluster.security.channel(cluster.nodes[2].grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="raftlog.v1.Broker"), timeout=30
        )
        assert next(watch).status == SERVING
        stopping = cluster._process(2)
        assert stopping is not None
        stopping.signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING


def test_reflection_lists_every_service_and_describes_them(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    with cluster.security.channel(cluster.nodes[1].grpc) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (listed,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in listed.list_services_response.service}
        assert names == {
            "raftlog.v1.Broker",
            "raftlog.v1.Controller",
            "raftlog.v1.GroupCoordinator",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        (described,) = stub.ServerReflectionInfo(
            iter(
                [reflection_pb2.ServerReflectionRequest(file_containing_symbol="raftlog.v1.Broker")]
            ),
            timeout=10,
        )
        files = described.file_descriptor_response.file_descriptor_proto
        assert files and any(b"Produce" in f for f in files)


def test_status_shows_windowed_rates_that_fall_back_to_zero(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, **FAST)
    admin = Admin(cluster.bootstrap, timeout_s=10, security=cluster.security)
    admin.create_topic("r", 3, 3, min_insync_replicas=2)
    with Producer(cluster.bootstrap, security=cluster.security) as producer:
        deadline = time.monotonic() + 3  # keep sending: the window is a few seconds
        created = 0
        while time.monotonic() < deadline:
            for future in [producer.send("r", b"x" * 100) for _ in range(200)]:
                future.result(20)
            if created < 4:  # metadata commands, for the Raft commit rate
                admin.create_topic(f"more-{created}", 1, 1)
                created += 1
        snapshot = admin.status_snapshot()
    rates = {t.topic: t for t in snapshot.topic_rates()}
    assert (
        rates["r"].records_in_per_s > 0
        and rates["r"].bytes_in_per_s > 100 * rates["r"].records_in_per_s * 0.9
    )
    assert all(b.rates is not None for b in snapshot.brokers)
    assert all(b.rates.raft_commits_per_s > 0 for b in snapshot.brokers if b.rates)
    assert sum(b.rates.replication_bytes_in_per_s for b in snapshot.brokers if b.rates) > 0
    body = snapshot.to_json()
    assert body["topic_rates"][0]["topic"] == "r"
    # nothing sent for longer than the window: back to 0
    wait_until(
        lambda: all(t.records_in_per_s == 0 for t in admin.status_snapshot().topic_rates()),
        timeout_s=15,
        what="the rates to fall back to 0",
    )


def test_the_clients_own_metrics_count_what_they_sent_retried_and_consumed(
    make_cluster: ClusterFactory,
) -> None:
    # a third of the Produce answers are dropped: the idempotent producer retries those batches
    cluster = make_cluster(3, **FAST, testing={"drop_produce_responses": 0.3})
    metrics = ClientMetrics()
    Admin(cluster.bootstrap, timeout_s=10, security=cluster.security).create_topic("c", 3, 3)
    values = [f"v{i}".encode() for i in range(400)]
    with Producer(
        cluster.bootstrap,
        security=cluster.security,
        client_id="writer",
        metrics=metrics,
        request_timeout_ms=1000,
        delivery_timeout_ms=60_000,
        linger_ms=1,
    ) as producer:
        # 40 rounds of 10: the sticky partitioner sends a round in one or two requests, and
        # with 8 rounds of 50 no answer was dropped in 1 run in ~20 (0.7^8): 0.7^40 is ~1e-6
        for chunk in range(0, len(values), 10):
            for future in [producer.send("c", v) for v in values[chunk : chunk + 10]]:
                future.result(60)
    with Consumer(
        cluster.bootstrap, security=cluster.security, client_id="reader", metrics=metrics
    ) as consumer:
        consumer.assign_topic("c")
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < len(values) and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=500)
    assert sorted(r.value for r in got) == sorted(values)  # each stored once despite retries
    value = metrics.registry.get_sample_value
    assert value("raftlog_client_records_sent_total", {"client_id": "writer", "topic": "c"}) == 400
    assert value("raftlog_client_retries_total", {"client_id": "writer"}) >= 1
    assert (
        value("raftlog_client_record_errors_total", {"client_id": "writer", "topic": "c"}) is None
    )
    assert value("raftlog_client_batch_size_bytes_count", {"client_id": "writer"}) >= 8
    produce = {"client_id": "writer", "rpc": "Produce"}
    assert value("raftlog_client_request_duration_seconds_count", produce) >= 8
    assert (
        value("raftlog_client_records_consumed_total", {"client_id": "reader", "topic": "c"}) == 400
    )
    assert value("raftlog_client_bytes_consumed_total", {"client_id": "reader", "topic": "c"}) > 400
    fetch = {"client_id": "reader", "rpc": "Fetch"}
    assert value("raftlog_client_request_duration_seconds_count", fetch) >= 1
