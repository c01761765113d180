"""/metrics without a broker: the partition gauges over a real metadata state, the families of a
hand-built snapshot as Prometheus text read back by prometheus-client's parser, the request
meter's codes, and the health rule."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from raftlog.cluster.broker_metrics import BrokerMetrics
from raftlog.cluster.health import BrokerHealth, serving
from raftlog.cluster.metrics import (
    METRIC_NAMES,
    BrokerCollector,
    GroupLag,
    LogSize,
    MetricsSnapshot,
    PartitionGauges,
    partition_gauges,
)
from raftlog.cluster.request_metrics import RequestMeter, answer_codes
from raftlog.proto import broker_pb2
from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import (
    CreateTopic,
    FenceBroker,
    RegisterBroker,
    UnfenceBroker,
    encode_command,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.store import MetadataStore

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exposed(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def cluster_state() -> MetadataState:
    """Three live brokers; topic t with partitions led by 1, 2, 3 (min ISR 2)."""
    state = MetadataState()
    for b in (1, 2, 3):
        assert state.apply_command(RegisterBroker(b, f"h:{b}", incarnation=b)).result["ok"]
        assert state.apply_command(UnfenceBroker(b, b)).result["ok"]
    created = state.apply_command(
        CreateTopic("t", ((1, 2, 3), (2, 3, 1), (3, 1, 2)), (("min.insync.replicas", "2"),))
    )
    assert created.result.get("ok"), created.result
    return state


def test_partition_gauges_count_led_partitions_and_the_controller_counts_offline_ones() -> None:
    state = cluster_state()
    assert partition_gauges(state, 1, active=False) == PartitionGauges(leader=1)
    state.apply_command(FenceBroker(3, 3))  # 1 and 2 lose a follower, 3's partition moves to 1
    assert partition_gauges(state, 1, active=False) == PartitionGauges(2, 2, 0)
    assert partition_gauges(state, 1, active=True) == PartitionGauges(2, 2, 0, 0, 1)
    state.apply_command(FenceBroker(2, 2))  # 1 alone: below min ISR everywhere it leads
    assert partition_gauges(state, 1, active=True) == PartitionGauges(3, 3, 3, 0, 2)
    state.apply_command(FenceBroker(1, 1))  # nobody left to lead
    assert partition_gauges(state, 1, active=True) == PartitionGauges(0, 0, 0, 3, 3)
    assert partition_gauges(state, 2, active=False).offline == 0  # only the controller says


SNAPSHOT = MetricsSnapshot(
    partitions=PartitionGauges(leader=4, under_replicated=2, under_min_isr=1, offline=3),
    raft_role="follower",
    raft_term=7,
    raft_commit_index=120,
    raft_applied_index=119,
    active_controller=False,
    leader_elections=5,
    unclean_leader_elections=1,
    isr_shrinks=9,
    isr_expands=8,
    topics=(("orders", 300, 30_000, 600, 60_000), ("audit", 1, 100, 0, 0)),
    replication_bytes_in=123,
    replication_bytes_out=456,
    logs=(LogSize("orders", 0, 4096, 2), LogSize("orders", 1, 100, 1)),
    purgatory=(("produce", 3), ("fetch", 11)),
    producer_ids=42,
    group_members=(("billing", 2),),
    group_lags=(GroupLag("billing", "orders", 0, 17),),
)


def test_a_snapshot_reads_back_through_the_prometheus_text_format() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(lambda: SNAPSHOT))
    got = exposed(registry)
    expect = {
        ("raftlog_leader_partitions", ()): 4,
        ("raftlog_under_replicated_partitions", ()): 2,
        ("raftlog_under_min_isr_partitions", ()): 1,
        ("raftlog_offline_partitions", ()): 3,
        ("raftlog_raft_role", (("role", "follower"),)): 1,
        ("raftlog_raft_role", (("role", "leader"),)): 0,
        ("raftlog_raft_term", ()): 7,
        ("raftlog_raft_commit_index", ()): 120,
        ("raftlog_raft_applied_index", ()): 119,
        ("raftlog_active_controller", ()): 0,
        ("raftlog_leader_elections_total", ()): 5,
        ("raftlog_unclean_leader_elections_total", ()): 1,
        ("raftlog_isr_shrinks_total", ()): 9,
        ("raftlog_isr_expands_total", ()): 8,
        ("raftlog_records_in_total", (("topic", "orders"),)): 300,
        ("raftlog_bytes_in_total", (("topic", "orders"),)): 30_000,
        ("raftlog_records_out_total", (("topic", "orders"),)): 600,
        ("raftlog_bytes_out_total", (("topic", "audit"),)): 0,
        ("raftlog_replication_bytes_total", (("direction", "in"),)): 123,
        ("raftlog_replication_bytes_total", (("direction", "out"),)): 456,
        ("raftlog_log_size_bytes", (("partition", "0"), ("topic", "orders"))): 4096,
        ("raftlog_log_segments", (("partition", "0"), ("topic", "orders"))): 2,
        ("raftlog_purgatory_operations", (("kind", "fetch"),)): 11,
        ("raftlog_producer_ids", ()): 42,
        ("raftlog_group_members", (("group", "billing"),)): 2,
        ("raftlog_group_lag", (("group", "billing"), ("partition", "0"), ("topic", "orders"))): 17,
    }
    assert {key: got.get(key) for key in expect} == expect


def test_metric_names_is_exactly_what_metrics_exports() -> None:
    registry = CollectorRegistry(auto_describe=False)
    RequestMeter(registry).observe(
        "Produce", 0.002, broker_pb2.ProduceResponse(error={"code": ErrorCode.NOT_CONTROLLER})
    )
    registry.register(BrokerCollector(lambda: SNAPSHOT))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    histograms = {f.name for f in families if f.type == "histogram"}
    plain = {s.name for f in families if f.type != "histogram" for s in f.samples}
    assert not any(name.endswith("_created") for name in plain)
    assert plain | histograms == METRIC_NAMES


def test_the_request_meter_counts_request_level_and_partition_codes() -> None:
    registry = CollectorRegistry(auto_describe=False)
    meter = RequestMeter(registry)
    ok = broker_pb2.ProduceResponse()
    refused = broker_pb2.ProduceResponse(
        partitions=[
            broker_pb2.PartitionProduceResult(
                topic="t", partition=p, error={"code": ErrorCode.NOT_LEADER_OR_FOLLOWER}
            )
            for p in range(3)
        ]
    )
    denied = broker_pb2.ProduceResponse(error={"code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED})
    assert answer_codes(refused) == (ErrorCode.NONE, [ErrorCode.NOT_LEADER_OR_FOLLOWER] * 3)
    assert answer_codes(denied) == (
        ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
        [ErrorCode.CLUSTER_AUTHORIZATION_FAILED],
    )
    meter.observe("Produce", 0.0004, ok)
    meter.observe("Produce", 0.003, refused)
    meter.observe("Produce", 0.02, denied)
    meter.failed("Fetch", 0.5, "CANCELLED")
    got = exposed(registry)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    assert value("raftlog_requests_total", rpc="Produce", code="NONE") == 2
    assert value("raftlog_requests_total", rpc="Produce", code="CLUSTER_AUTHORIZATION_FAILED") == 1
    assert value("raftlog_request_errors_total", rpc="Produce", code="NOT_LEADER_OR_FOLLOWER") == 3
    assert value("raftlog_request_errors_total", rpc="Produce", code="NONE") is None
    assert value("raftlog_requests_total", rpc="Fetch", code="CANCELLED") == 1
    assert value("raftlog_request_duration_seconds_count", rpc="Produce") == 3
    assert value("raftlog_request_duration_seconds_bucket", rpc="Produce", le="0.0005") == 1
    assert value("raftlog_request_duration_seconds_bucket", rpc="Produce", le="0.005") == 2
    assert value("raftlog_request_duration_seconds_sum", rpc="Produce") == pytest.approx(0.0234)


@pytest.mark.parametrize("broken", ["caught_up", "registered", "fenced", "cut_off", "stopping"])
def test_health_is_serving_only_when_every_condition_holds(broken: str) -> None:
    good = {
        "caught_up": True,
        "registered": True,
        "fenced": False,
        "cut_off": False,
        "stopping": False,
    }
    assert serving(**good)
    assert not serving(**{**good, broken: not good[broken]})


def test_broker_health_publishes_changes_only() -> None:
    health = BrokerHealth(["raftlog.v1.Broker"])
    assert health.changed(False)  # the first answer is always published
    assert not health.changed(False)
    assert health.changed(True) and health.is_serving
    assert not health.changed(True)


def test_a_snapshot_is_plain_data() -> None:
    moved = replace(SNAPSHOT, raft_role="leader", active_controller=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(lambda: moved))
    got = exposed(registry)
    assert got[("raftlog_raft_role", (("role", "leader"),))] == 1
    assert got[("raftlog_active_controller", ())] == 1


def test_the_broker_is_serving_once_its_own_incarnation_is_registered_and_unfenced() -> None:
    """``BrokerMetrics.is_serving`` over a real metadata store: a previous incarnation's
    registration does not count, a fenced one does not serve, nor one not caught up or cut off."""
    store = MetadataStore()
    replicas = SimpleNamespace(ready=True, cut_off=None)
    broker = SimpleNamespace(
        config=SimpleNamespace(node_id=1, metrics_address=None),
        incarnation=20,
        store=store,
        replicas=replicas,
    )
    metrics = BrokerMetrics(broker)  # type: ignore[arg-type]
    assert not metrics.is_serving(stopping=False)  # not registered at all
    store.apply(encode_command(RegisterBroker(1, "h:1", incarnation=10)))
    store.apply(encode_command(UnfenceBroker(1, 10)))
    assert not metrics.is_serving(stopping=False)  # the previous process's registration
    store.apply(encode_command(RegisterBroker(1, "h:1", incarnation=20)))
    assert not metrics.is_serving(stopping=False)  # registered, still fenced
    store.apply(encode_command(UnfenceBroker(1, 20)))
    assert metrics.is_serving(stopping=False)
    assert not metrics.is_serving(stopping=True)
    replicas.cut_off = "no controller for 3 s"
    assert not metrics.is_serving(stopping=False)
    replicas.cut_off = None
    replicas.ready = False
    assert not metrics.is_serving(stopping=False)
    replicas.ready = True
    store.apply(encode_command(FenceBroker(1, 20)))
    assert not metrics.is_serving(stopping=False)  # fenced after a missed session
