"""ClientMetrics without a cluster: names, labels, per-batch counting, registries kept apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from raftlog.client.metrics import ClientMetrics


def test_counts_per_batch_with_the_client_and_topic_labels() -> None:
    metrics = ClientMetrics()
    metrics.acknowledged("app", "orders", 5000, 150_000)
    metrics.acknowledged("app", "orders", 10, 1_000)
    metrics.failed("app", "orders", 3)
    metrics.retried("app")
    metrics.request("app", "Produce", 0.004)
    metrics.consumed("reader", "orders", 7, 700)
    value = metrics.registry.get_sample_value
    assert (
        value("raftlog_client_records_sent_total", {"client_id": "app", "topic": "orders"}) == 5010
    )
    assert value("raftlog_client_record_errors_total", {"client_id": "app", "topic": "orders"}) == 3
    assert value("raftlog_client_retries_total", {"client_id": "app"}) == 1
    assert value("raftlog_client_batch_size_bytes_count", {"client_id": "app"}) == 2
    assert (
        value("raftlog_client_batch_size_bytes_bucket", {"client_id": "app", "le": "2048.0"}) == 1
    )
    assert (
        value(
            "raftlog_client_request_duration_seconds_count", {"client_id": "app", "rpc": "Produce"}
        )
        == 1
    )
    assert (
        value("raftlog_client_records_consumed_total", {"client_id": "reader", "topic": "orders"})
        == 7
    )
    assert (
        value("raftlog_client_bytes_consumed_total", {"client_id": "reader", "topic": "orders"})
        == 700
    )


def test_each_instance_has_its_own_registry_unless_given_one() -> None:
    a, b = ClientMetrics(), ClientMetrics()
    a.retried("x")
    assert b.registry.get_sample_value("raftlog_client_retries_total", {"client_id": "x"}) is None
    shared = CollectorRegistry()
    metrics = ClientMetrics(shared)
    metrics.retried("x")
    assert shared.get_sample_value("raftlog_client_retries_total", {"client_id": "x"}) == 1
