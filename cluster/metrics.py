"""The broker's ``/metrics``: Prometheus text, collected on scrape from state the broker has.

Nothing here runs per record. The hot paths bump plain ints (``traffic.py``) and the request
meter (``request_metrics.py``) adds one counter and one histogram sample per RPC; everything
else — partition health, log sizes, the purgatories, producer ids, the Raft state, consumer
groups — is read when Prometheus asks. A scrape arrives on prometheus-client's HTTP thread; the
loop owns what it reads, so ``BrokerCollector`` hands ``take`` (the broker's ``metrics_snapshot``,
which hops onto the loop) the job of copying it into one frozen ``MetricsSnapshot``, and turns
that into metric families here, purely (``families``: tested without a broker or a socket).

Which broker reports what, as Kafka does: the partition gauges (``leader_partitions``,
``under_replicated_partitions``, ``under_min_isr_partitions``) count the partitions this broker
leads, so a sum over brokers is the cluster's figure; ``offline_partitions``,
``fenced_brokers`` and the election counters are the active controller's (every other broker
says 0), so a sum is the cluster's again; consumer-group members and lag come from each group's
coordinator, lag only for partitions of which the coordinator holds a replica (its high
watermark minus the group's committed offset).

The endpoint is plain HTTP, bound to ``metrics_address`` only: it shows topic and group names
and no record, and asks nothing of the caller. Bind it to an address your Prometheus alone can
reach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import NO_LEADER

__all__ = [
    "METRIC_NAMES",
    "BrokerCollector",
    "GroupLag",
    "LogSize",
    "MetricsSnapshot",
    "PartitionGauges",
    "families",
    "partition_gauges",
]

logger = logging.getLogger(__name__)

ROLES = ("leader", "follower", "candidate", "observer")

# every sample family /metrics exports (counters with their _total); the examples' dashboard
# and alerts are checked against it (tests/unit/test_observability_examples.py)
METRIC_NAMES = frozenset(
    {
        "raftlog_under_replicated_partitions",
        "raftlog_under_min_isr_partitions",
        "raftlog_offline_partitions",
        "raftlog_leader_partitions",
        "raftlog_isr_shrinks_total",
        "raftlog_isr_expands_total",
        "raftlog_leader_elections_total",
        "raftlog_unclean_leader_elections_total",
        "raftlog_request_duration_seconds",
        "raftlog_requests_total",
        "raftlog_request_errors_total",
        "raftlog_bytes_in_total",
        "raftlog_bytes_out_total",
        "raftlog_records_in_total",
        "raftlog_records_out_total",
        "raftlog_replication_bytes_total",
        "raftlog_log_size_bytes",
        "raftlog_log_segments",
        "raftlog_purgatory_operations",
        "raftlog_producer_ids",
        "raftlog_log_cleaner_bytes_read_total",
        "raftlog_log_cleaner_bytes_written_total",
        "raftlog_log_cleaner_last_pass_seconds",
        "raftlog_raft_role",
        "raftlog_raft_term",
        "raftlog_raft_commit_index",
        "raftlog_raft_applied_index",
        "raftlog_active_controller",
        "raftlog_fenced_brokers",
        "raftlog_group_members",
        "raftlog_group_lag",
    }
)


@dataclass(frozen=True, slots=True)
class PartitionGauges:
    leader: int = 0
    under_replicated: int = 0
    under_min_isr: int = 0
    offline: int = 0  # the active controller's figure; 0 elsewhere
    fenced_brokers: int = 0  # likewise


@dataclass(frozen=True, slots=True)
class LogSize:
    topic: str
    partition: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    lag: int


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape reports, copied on the broker loop."""

    partitions: PartitionGauges
    raft_role: str  # one of ROLES
    raft_term: int
    raft_commit_index: int
    raft_applied_index: int
    active_controller: bool
    leader_elections: int
    unclean_leader_elections: int
    isr_shrinks: int
    isr_expands: int
    # per topic: (records in, bytes in, records out, bytes out)
    topics: tuple[tuple[str, int, int, int, int], ...]
    replication_bytes_in: int
    replication_bytes_out: int
    logs: tuple[LogSize, ...]
    purgatory: tuple[tuple[str, int], ...]  # (kind, waiting operations)
    producer_ids: int
    group_members: tuple[tuple[str, int], ...]
    group_lags: tuple[GroupLag, ...]
    # the log cleaner (compacted topics): totals since start, and its last pass's duration
    cleaner_bytes_read: int = 0
    cleaner_bytes_written: int = 0
    cleaner_last_pass_s: float = 0.0


def partition_gauges(state: MetadataState, broker_id: int, active: bool) -> PartitionGauges:
    """The partition-health gauges from the metadata: this broker's led partitions; offline
    partitions and fenced brokers too when ``active`` (the active controller reports them)."""
    leader = under_replicated = under_min_isr = offline = 0
    for record in state.partitions.values():
        if record.leader == broker_id:
            leader += 1
            under_replicated += len(record.isr) < len(record.replicas)
            topic = state.topics.get(record.topic)
            under_min_isr += topic is not None and len(record.isr) < topic.min_insync_replicas
        elif active and record.leader == NO_LEADER:
            offline += 1
    fenced = sum(b.fenced for b in state.brokers.values()) if active else 0
    return PartitionGauges(leader, under_replicated, under_min_isr, offline, fenced)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def families(snapshot: MetricsSnapshot) -> list[Metric]:
    """The metric families of one snapshot (``/metrics`` adds the request meter's own)."""
    parts = snapshot.partitions
    out: list[Metric] = [
        _gauge(
            "raftlog_under_replicated_partitions",
            "Partitions this broker leads whose ISR is smaller than their replica set.",
            parts.under_replicated,
        ),
        _gauge(
            "raftlog_under_min_isr_partitions",
            "Partitions this broker leads whose ISR is below min.insync.replicas (acks=all fails).",
            parts.under_min_isr,
        ),
        _gauge(
            "raftlog_offline_partitions",
            "Partitions without a leader (reported by the active controller; 0 elsewhere).",
            parts.offline,
        ),
        _gauge("raftlog_leader_partitions", "Partitions this broker leads.", parts.leader),
        _gauge(
            "raftlog_fenced_brokers",
            "Registered brokers the controller has fenced (active controller only).",
            parts.fenced_brokers,
        ),
        _gauge(
            "raftlog_active_controller",
            "1 when this broker is the active controller.",
            int(snapshot.active_controller),
        ),
        _gauge("raftlog_raft_term", "The metadata quorum's current term.", snapshot.raft_term),
        _gauge(
            "raftlog_raft_commit_index",
            "The metadata quorum's commit index as this voter knows it.",
            snapshot.raft_commit_index,
        ),
        _gauge(
            "raftlog_raft_applied_index",
            "The last metadata log index applied to this broker's state.",
            snapshot.raft_applied_index,
        ),
        _gauge(
            "raftlog_producer_ids",
            "Producer ids with idempotence state in this broker's replicas.",
            snapshot.producer_ids,
        ),
        _gauge(
            "raftlog_log_cleaner_last_pass_seconds",
            "How long the log cleaner's last pass took (its IO bound included).",
            snapshot.cleaner_last_pass_s,
        ),
    ]
    role = GaugeMetricFamily(
        "raftlog_raft_role", "1 for this voter's current Raft role.", labels=["role"]
    )
    for name in ROLES:
        role.add_metric([name], int(snapshot.raft_role == name))
    out.append(role)
    for name, doc, value in (
        ("raftlog_isr_shrinks", "ISR shrinks of partitions led here.", snapshot.isr_shrinks),
        ("raftlog_isr_expands", "ISR expansions of partitions led here.", snapshot.isr_expands),
        (
            "raftlog_leader_elections",
            "Partitions given a new leader, counted by the active controller.",
            snapshot.leader_elections,
        ),
        (
            "raftlog_unclean_leader_elections",
            "Leaders elected from outside the ISR and ELR (data may have been lost).",
            snapshot.unclean_leader_elections,
        ),
        (
            "raftlog_log_cleaner_bytes_read",
            "Bytes the log cleaner read from compacted logs.",
            snapshot.cleaner_bytes_read,
        ),
        (
            "raftlog_log_cleaner_bytes_written",
            "Bytes the log cleaner wrote as cleaned segments.",
            snapshot.cleaner_bytes_written,
        ),
    ):
        out.append(CounterMetricFamily(name, doc, value=value))
    out.extend(_traffic(snapshot))
    sizes = GaugeMetricFamily(
        "raftlog_log_size_bytes", "Bytes in a replica's segments.", labels=["topic", "partition"]
    )
    segments = GaugeMetricFamily(
        "raftlog_log_segments", "Segments of a replica's log.", labels=["topic", "partition"]
    )
    for log in snapshot.logs:
        labels = [log.topic, str(log.partition)]
        sizes.add_metric(labels, log.size_bytes)
        segments.add_metric(labels, log.segments)
    purgatory = GaugeMetricFamily(
        "raftlog_purgatory_operations",
        "Produce (acks=all) and fetch (min bytes) requests waiting in the purgatory.",
        labels=["kind"],
    )
    for kind, waiting in snapshot.purgatory:
        purgatory.add_metric([kind], waiting)
    members = GaugeMetricFamily(
        "raftlog_group_members",
        "Members of a consumer group this broker coordinates.",
        labels=["group"],
    )
    for group, count in snapshot.group_members:
        members.add_metric([group], count)
    lags = GaugeMetricFamily(
        "raftlog_group_lag",
        "High watermark minus the group's committed offset, per partition.",
        labels=["group", "topic", "partition"],
    )
    for lag in snapshot.group_lags:
        lags.add_metric([lag.group, lag.topic, str(lag.partition)], lag.lag)
    out.extend((sizes, segments, purgatory, members, lags))
    return out


def _traffic(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    records_in = CounterMetricFamily(
        "raftlog_records_in", "Records appended for producers, as leader.", labels=["topic"]
    )
    bytes_in = CounterMetricFamily(
        "raftlog_bytes_in", "Batch bytes appended for producers, as leader.", labels=["topic"]
    )
    records_out = CounterMetricFamily(
        "raftlog_records_out", "Records answered to consumers' fetches.", labels=["topic"]
    )
    bytes_out = CounterMetricFamily(
        "raftlog_bytes_out", "Record-batch bytes answered to consumers' fetches.", labels=["topic"]
    )
    for topic, r_in, b_in, r_out, b_out in snapshot.topics:
        records_in.add_metric([topic], r_in)
        bytes_in.add_metric([topic], b_in)
        records_out.add_metric([topic], r_out)
        bytes_out.add_metric([topic], b_out)
    replication = CounterMetricFamily(
        "raftlog_replication_bytes",
        "Replication bytes: in, appended as a follower; out, served to followers as leader.",
        labels=["direction"],
    )
    replication.add_metric(["in"], snapshot.replication_bytes_in)
    replication.add_metric(["out"], snapshot.replication_bytes_out)
    yield from (records_in, bytes_in, records_out, bytes_out, replication)


class BrokerCollector(Collector):
    """A prometheus-client collector over ``take()``, called once per scrape."""

    def __init__(self, take: Callable[[], MetricsSnapshot]) -> None:
        self._take = take

    def collect(self) -> Iterable[Metric]:
        return families(self._take())

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not call take(): the broker is not running yet
