"""The metadata's records: brokers, topics and partitions as frozen values, and ``Applied``.

Plain data shared by the state machine (:mod:`raftlog.raft.metadata`), its snapshot encoding
(:mod:`raftlog.raft.metadata_snapshot`) and every reader of committed metadata (the listener,
the controller, the broker). Invariants sit on the fields; the state machine keeps them (its
module docstring states the rules they come from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .topic_config import effective_configs

__all__ = [
    "NO_LEADER",
    "Applied",
    "BrokerRecord",
    "PartitionRecord",
    "TopicPartition",
    "TopicRecord",
]

NO_LEADER = -1  # a partition without a leader (offline)

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    broker_id: int
    address: str
    incarnation: int
    rack: str | None
    fenced: bool
    registered_version: int  # the metadata version that applied the registration (broker epoch)
    password_address: str | None = None  # its password listener, when it has one
    kafka_address: str | None = None  # its Kafka-protocol listener, when it has one


@dataclass(frozen=True, slots=True)
class TopicRecord:
    name: str
    topic_id: int  # new for every creation: tells a re-created topic from the old one
    partitions: int
    replication_factor: int
    configs: tuple[tuple[str, str], ...]  # explicitly set ones, sorted by name

    def config(self, name: str) -> str:
        return effective_configs(self.configs)[name]

    @property
    def min_insync_replicas(self) -> int:
        return int(self.config("min.insync.replicas"))

    @property
    def unclean_leader_election(self) -> bool:
        return self.config("unclean.leader.election.enable") == "true"


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    topic: str
    partition: int
    topic_id: int
    replicas: tuple[int, ...]  # the assignment; replicas[0] is the preferred leader
    isr: tuple[int, ...]  # ⊆ replicas, in replica order; empty only when no safe one is left
    leader: int  # NO_LEADER or ∈ isr
    leader_epoch: int  # bumped on every leader change
    partition_epoch: int  # bumped on every leader, ISR or ELR change
    elr: tuple[int, ...] = ()  # eligible leader replicas: ∩ isr = ∅, in replica order (rule 3)
    last_known_elr: tuple[int, ...] = ()  # non-empty only while isr and elr are empty (rule 7)
    # a reassignment in progress (KIP-455): ``replicas`` is the target followed by the replicas
    # being removed; ``adding`` catch up (their leader sends them at most ``throttle`` bytes/s,
    # 0: no limit) until every target replica is in the ISR, then ``removing`` leave
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()
    throttle: int = 0

    @property
    def target(self) -> tuple[int, ...]:
        """The replicas it is moving to (its replicas when no reassignment is in progress)."""
        if not self.removing:
            return self.replicas
        return tuple(b for b in self.replicas if b not in self.removing)

    @property
    def original(self) -> tuple[int, ...]:
        """The replicas it had before the reassignment in progress (its replicas if none)."""
        if not self.adding:
            return self.replicas
        return tuple(b for b in self.replicas if b not in self.adding)

    @property
    def key(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one command did: its result map, and what changed (for the listener)."""

    result: dict[str, Any]
    partitions: frozenset[TopicPartition] = frozenset()  # changed or created
    deleted: frozenset[TopicPartition] = frozenset()
    brokers: frozenset[int] = frozenset()
    acls_changed: bool = False  # bindings were added or removed: authorize with a new index
    users: frozenset[str] = frozenset()  # users whose credential was set or deleted
    elections: int = 0  # partitions this command gave a new leader (the /metrics counters)
    unclean_elections: int = 0  # ... of which outside the ISR and the ELR
