"""The cluster status snapshot: what ``raftlog status`` shows, as plain frozen data.

Built by ``Admin.status_snapshot()`` from gRPC calls (DescribeCluster and DescribeQuorum on the
controller, Metadata, DescribeReplicas on every broker) and rendered by ``status.render`` — a pure
function, so the view is tested without a cluster. ``to_json``/``from_json`` give the same
snapshot to scripts (``raftlog status --json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BrokerRates",
    "BrokerView",
    "PartitionView",
    "QuorumView",
    "ReplicaView",
    "StatusSnapshot",
    "TopicRates",
    "VoterView",
]


@dataclass(frozen=True, slots=True)
class TopicRates:
    topic: str
    records_in_per_s: float
    bytes_in_per_s: float
    records_out_per_s: float
    bytes_out_per_s: float


@dataclass(frozen=True, slots=True)
class BrokerRates:
    """One broker's windowed rates (DescribeReplicas): per second over the last ``window_s``,
    ISR changes over the last minute. ``in``: appended as leader; ``out``: sent to consumers."""

    window_s: float
    topics: tuple[TopicRates, ...]
    replication_bytes_in_per_s: float
    replication_bytes_out_per_s: float
    isr_shrinks_last_minute: int
    isr_expands_last_minute: int
    raft_commits_per_s: float

    @property
    def records_in_per_s(self) -> float:
        return sum(t.records_in_per_s for t in self.topics)

    @property
    def bytes_in_per_s(self) -> float:
        return sum(t.bytes_in_per_s for t in self.topics)

    @property
    def records_out_per_s(self) -> float:
        return sum(t.records_out_per_s for t in self.topics)

    @property
    def bytes_out_per_s(self) -> float:
        return sum(t.bytes_out_per_s for t in self.topics)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BrokerRates:
        return cls(**{**body, "topics": tuple(TopicRates(**t) for t in body["topics"])})


@dataclass(frozen=True, slots=True)
class BrokerView:
    broker_id: int
    address: str
    rack: str | None
    fenced: bool
    alive: bool  # heartbeating the controller (False when the controller could not be asked)
    reachable: bool  # answered our DescribeReplicas just now
    last_heartbeat_ms_ago: int  # -1: unknown
    raft_role: str  # "leader", "follower", "candidate", "observer" or "unknown"
    is_controller: bool
    rates: BrokerRates | None = None  # None: not reachable, or a broker without rates


@dataclass(frozen=True, slots=True)
class VoterView:
    node_id: int
    raft_address: str
    match_index: int  # -1: unknown (only the Raft leader knows)
    lag: int  # -1: unknown


@dataclass(frozen=True, slots=True)
class QuorumView:
    leader_id: int  # -1: none
    term: int
    commit_index: int
    last_applied: int
    voters: tuple[VoterView, ...]


@dataclass(frozen=True, slots=True)
class ReplicaView:
    broker_id: int
    log_end_offset: int  # -1: unknown
    lag: int  # leader's LEO - this replica's LEO; -1: unknown
    in_sync: bool


@dataclass(frozen=True, slots=True)
class PartitionView:
    topic: str
    partition: int
    leader: int  # -1: offline
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    min_insync_replicas: int
    high_watermark: int  # -1: unknown (leader unreachable)
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    replica_views: tuple[ReplicaView, ...]

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def under_min_isr(self) -> bool:
        return len(self.isr) < self.min_insync_replicas


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    taken_at_ms: int  # wall clock, ms since the epoch
    bootstrap: str
    controller_id: int  # -1: none
    metadata_version: int
    brokers: tuple[BrokerView, ...]
    quorum: QuorumView | None
    partitions: tuple[PartitionView, ...]
    errors: tuple[str, ...] = field(default=())  # what could not be fetched, for the footer

    @property
    def offline_count(self) -> int:
        return sum(p.offline for p in self.partitions)

    @property
    def under_replicated_count(self) -> int:
        return sum(p.under_replicated for p in self.partitions)

    @property
    def under_min_isr_count(self) -> int:
        return sum(p.under_min_isr for p in self.partitions)

    def topic_rates(self) -> tuple[TopicRates, ...]:
        """Each topic's rates summed over the brokers that answered, busiest (bytes) first."""
        sums: dict[str, list[float]] = {}
        for broker in self.brokers:
            for t in broker.rates.topics if broker.rates is not None else ():
                row = sums.setdefault(t.topic, [0.0, 0.0, 0.0, 0.0])
                row[0] += t.records_in_per_s
                row[1] += t.bytes_in_per_s
                row[2] += t.records_out_per_s
                row[3] += t.bytes_out_per_s
        rows = [TopicRates(topic, *values) for topic, values in sums.items()]
        rows.sort(key=lambda t: (-(t.bytes_in_per_s + t.bytes_out_per_s), t.topic))
        return tuple(rows)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["totals"] = {
            "partitions": len(self.partitions),
            "offline": self.offline_count,
            "under_replicated": self.under_replicated_count,
            "under_min_isr": self.under_min_isr_count,
        }
        body["topic_rates"] = [asdict(t) for t in self.topic_rates()]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StatusSnapshot:
        quorum = body.get("quorum")
        return cls(
            taken_at_ms=body["taken_at_ms"],
            bootstrap=body["bootstrap"],
            controller_id=body["controller_id"],
            metadata_version=body["metadata_version"],
            brokers=tuple(
                BrokerView(**{**b, "rates": rates and BrokerRates.from_json(rates)})
                for b in body["brokers"]
                for rates in (b.get("rates"),)
            ),
            quorum=None
            if quorum is None
            else QuorumView(
                leader_id=quorum["leader_id"],
                term=quorum["term"],
                commit_index=quorum["commit_index"],
                last_applied=quorum["last_applied"],
                voters=tuple(VoterView(**v) for v in quorum["voters"]),
            ),
            partitions=tuple(
                PartitionView(
                    **{
                        **p,
                        "replicas": tuple(p["replicas"]),
                        "isr": tuple(p["isr"]),
                        "replica_views": tuple(ReplicaView(**r) for r in p["replica_views"]),
                    }
                )
                for p in body["partitions"]
            ),
            errors=tuple(body.get("errors", ())),
        )
