"""The client library's own Prometheus metrics, for applications that serve Prometheus (Kafka's
producer and consumer metrics: record-send-total, record-retry-total, batch-size, request
latency, records-consumed-total).

One ``ClientMetrics`` per registry, shared by every Producer and Consumer of the application
(``metrics=``); each client's series carry its ``client_id``. The registry is the application's
(serve it with ``prometheus_client.start_http_server(port, registry=registry)``) or a private one
(``ClientMetrics().registry``); never prometheus-client's global one unless passed, so two
libraries in one process cannot collide. Everything is counted per batch or per response,
never per record: an acknowledged batch of 5,000 records is one ``inc(5000)``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["BATCH_BYTES_BUCKETS", "ClientMetrics"]

# batch sizes from one 100 B record up to the 16 MiB a request may carry
BATCH_BYTES_BUCKETS = (
    128,
    512,
    2048,
    8192,
    32768,
    131072,
    262144,
    1 << 20,
    4 << 20,
    16 << 20,
)
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class ClientMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._sent = Counter(
            "raftlog_client_records_sent",
            "Records acknowledged by the cluster.",
            ["client_id", "topic"],
            registry=self.registry,
        )
        self._failed = Counter(
            "raftlog_client_record_errors",
            "Records whose send finally failed.",
            ["client_id", "topic"],
            registry=self.registry,
        )
        self._retries = Counter(
            "raftlog_client_retries",
            "Batches sent again after a retriable error.",
            ["client_id"],
            registry=self.registry,
        )
        self._batch_bytes = Histogram(
            "raftlog_client_batch_size_bytes",
            "Size of the record batches sent.",
            ["client_id"],
            registry=self.registry,
            buckets=BATCH_BYTES_BUCKETS,
        )
        self._latency = Histogram(
            "raftlog_client_request_duration_seconds",
            "Round trip of Produce and Fetch requests, as the client sees it.",
            ["client_id", "rpc"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self._consumed = Counter(
            "raftlog_client_records_consumed",
            "Records handed to the application by poll.",
            ["client_id", "topic"],
            registry=self.registry,
        )
        self._consumed_bytes = Counter(
            "raftlog_client_bytes_consumed",
            "Record-batch bytes fetched for the application.",
            ["client_id", "topic"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def acknowledged(self, client_id: str, topic: str, records: int, size_bytes: int) -> None:
        self._child(self._sent, client_id, topic).inc(records)
        self._child(self._batch_bytes, client_id).observe(size_bytes)

    def failed(self, client_id: str, topic: str, records: int) -> None:
        self._child(self._failed, client_id, topic).inc(records)

    def retried(self, client_id: str) -> None:
        self._child(self._retries, client_id).inc()

    def request(self, client_id: str, rpc: str, seconds: float) -> None:
        self._child(self._latency, client_id, rpc).observe(seconds)

    def consumed(self, client_id: str, topic: str, records: int, size_bytes: int) -> None:
        self._child(self._consumed, client_id, topic).inc(records)
        self._child(self._consumed_bytes, client_id, topic).inc(size_bytes)
