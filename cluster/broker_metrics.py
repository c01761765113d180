"""The broker's observability shell: its metrics registry and ``/metrics`` endpoint, the request
meter (used by ``rpc_errors.typed_errors``), the election counters, the windowed rates of
``raftlog status`` (the traffic counters and the Raft commit index sampled every second into a
``CounterHistory``, answered in DescribeReplicas), the health service's rule applied to the
broker's state.

``metrics.py`` says what is exported and why; this module only fetches the values. A scrape
runs on prometheus-client's HTTP thread: ``_scrape`` hands ``snapshot`` to the broker loop (which
owns the replicas, the purgatories and the groups) and waits at most ``SCRAPE_TIMEOUT_S`` — a
loop that cannot answer that fast fails the scrape (Prometheus records ``up`` 0 for it), which
is itself the alert. Scrapes are served one at a time and a snapshot younger than
``SNAPSHOT_REUSE_S`` is answered again: a caller hammering the endpoint costs the loop at most
one snapshot a second, whatever it sends.

The election counters are bumped on the Raft thread as commands apply, only while this broker
is the active controller (Kafka's controller metrics), so a sum over the brokers counts each
election once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from raftlog.proto import broker_pb2
from raftlog.raft.metadata_records import Applied

from .health import serving
from .metrics import BrokerCollector, GroupLag, LogSize, MetricsSnapshot, partition_gauges
from .rates import CounterHistory
from .request_metrics import RequestMeter

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["SCRAPE_TIMEOUT_S", "SNAPSHOT_REUSE_S", "BrokerMetrics"]

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 5.0
SNAPSHOT_REUSE_S = 1.0
RATE_SAMPLE_INTERVAL_MS = 1000
RATE_WINDOW_MS = 5000  # "lately" for throughput and the commit rate
ISR_WINDOW_MS = 60_000  # ISR changes are counted over the last minute


class BrokerMetrics:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.registry = CollectorRegistry(auto_describe=False)
        # metered only where /metrics can show it: without an endpoint there is nothing to pay
        self.requests = (
            RequestMeter(self.registry) if broker.config.metrics_address is not None else None
        )
        self.registry.register(BrokerCollector(self._scrape))
        self.leader_elections = 0
        self.unclean_leader_elections = 0
        self.counting_elections = False  # set once the quorum exists (run())
        self.history = CounterHistory()
        self._server: Any = None
        self._scrape_lock = threading.Lock()
        self._last: tuple[float, MetricsSnapshot] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the endpoint ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        address = self._broker.config.metrics_address
        if address is None:
            return
        host, _, port = address.rpartition(":")
        try:
            self._server, _ = start_http_server(int(port), host, registry=self.registry)
        except OSError as exc:  # as for the gRPC listeners: the broker does not start
            raise OSError(f"cannot listen on metrics_address {address}: {exc}") from exc
        logger.info("metrics on http://%s/metrics", address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _scrape(self) -> MetricsSnapshot:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the broker is not running")

        async def on_loop() -> MetricsSnapshot:
            return self.snapshot()

        with self._scrape_lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < SNAPSHOT_REUSE_S:
                return self._last[1]
            taken = asyncio.run_coroutine_threadsafe(on_loop(), loop).result(SCRAPE_TIMEOUT_S)
            self._last = (now, taken)
            return taken

    # ---- the values --------------------------------------------------------------------------

    def applied(self, applied: Applied | None) -> None:
        """On the Raft thread, for each applied command: count its elections when we are the
        active controller (start-up replays happen before we can be)."""
        if applied is None or not applied.elections or not self.counting_elections:
            return
        if self._broker.quorum.is_leader():
            self.leader_elections += applied.elections
            self.unclean_leader_elections += applied.unclean_elections

    def snapshot(self) -> MetricsSnapshot:
        """Everything one scrape reports (on the loop)."""
        broker = self._broker
        node_id = broker.config.node_id
        active = broker.quorum.is_leader()
        with broker.store.read() as state:
            gauges = partition_gauges(state, node_id, active)
        status = broker.quorum.status()
        replicas = broker.replicas
        traffic = replicas.traffic
        logs = []
        producer_ids = 0
        for (topic, index), partition in replicas.partitions.items():
            log_ = partition.log
            logs.append(LogSize(topic, index, log_.size_bytes, log_.segment_count))
            producer_ids += len(partition.producers)
        members = []
        lags = []
        for group, count, offsets in broker.coordinator.committed():
            members.append((group, count))
            for (topic, index), offset in offsets.items():
                replica = replicas.partitions.get((topic, index))
                if replica is not None and offset >= 0:
                    lags.append(
                        GroupLag(group, topic, index, max(0, replica.high_watermark - offset))
                    )
        return MetricsSnapshot(
            partitions=gauges,
            raft_role=str(status.role),
            raft_term=status.term,
            raft_commit_index=status.commit_index,
            raft_applied_index=status.last_applied,
            active_controller=active,
            leader_elections=self.leader_elections,
            unclean_leader_elections=self.unclean_leader_elections,
            isr_shrinks=traffic.isr_shrinks,
            isr_expands=traffic.isr_expands,
            topics=tuple(
                (name, t.records_in, t.bytes_in, t.records_out, t.bytes_out)
                for name, t in traffic.topics.items()
            ),
            replication_bytes_in=traffic.replication_bytes_in,
            replication_bytes_out=traffic.replication_bytes_out,
            logs=tuple(logs),
            purgatory=(
                ("produce", replicas.produce_purgatory.size),
                ("fetch", replicas.fetch_purgatory.size),
            ),
            producer_ids=producer_ids,
            group_members=tuple(members),
            group_lags=tuple(lags),
            cleaner_bytes_read=replicas.cleaner.counters.bytes_read,
            cleaner_bytes_written=replicas.cleaner.counters.bytes_written,
            cleaner_last_pass_s=replicas.cleaner.counters.last_pass_ms / 1000,
        )

    # ---- windowed rates (raftlog status) -------------------------------------------------------

    def sample_rates(self) -> None:
        """Every RATE_SAMPLE_INTERVAL_MS on the loop: the counters into the history."""
        broker = self._broker
        values = broker.replicas.traffic.counters()
        values["raft_commits", ""] = broker.quorum.status().commit_index
        self.history.sample(broker.clock.mono_ms(), values)

    def rates(self) -> broker_pb2.BrokerRates:
        """This broker's rates now, for DescribeReplicas."""
        history = self.history
        now = self._broker.clock.mono_ms()

        def rate(name: str, topic: str = "") -> float:
            return round(history.rate((name, topic), RATE_WINDOW_MS, now), 1)

        answer = broker_pb2.BrokerRates(
            window_s=RATE_WINDOW_MS / 1000,
            replication_bytes_in_per_s=rate("replication_bytes_in"),
            replication_bytes_out_per_s=rate("replication_bytes_out"),
            isr_shrinks_last_minute=history.increase(("isr_shrinks", ""), ISR_WINDOW_MS, now),
            isr_expands_last_minute=history.increase(("isr_expands", ""), ISR_WINDOW_MS, now),
            raft_commits_per_s=rate("raft_commits"),
        )
        for topic in sorted(self._broker.replicas.traffic.topics):
            answer.topics.append(
                broker_pb2.TopicRates(
                    topic=topic,
                    records_in_per_s=rate("records_in", topic),
                    bytes_in_per_s=rate("bytes_in", topic),
                    records_out_per_s=rate("records_out", topic),
                    bytes_out_per_s=rate("bytes_out", topic),
                )
            )
        return answer

    def is_serving(self, stopping: bool) -> bool:
        """The health rule (``health.serving``) over the broker's state now."""
        broker = self._broker
        with broker.store.read() as state:
            record = state.brokers.get(broker.config.node_id)
            registered = record is not None and record.incarnation == broker.incarnation
            fenced = record is None or record.fenced
        return serving(
            caught_up=broker.replicas.ready,
            registered=registered,
            fenced=fenced,
            cut_off=broker.replicas.cut_off is not None,
            stopping=stopping,
        )
