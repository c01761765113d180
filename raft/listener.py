"""Turn metadata changes into replica events for one broker, never going backwards.

Pure: ``PartitionListener.changed(records)`` gets the new records of the partitions a command
touched (or, after a snapshot restore, all of them) and returns what this broker must do — become
leader, become follower, update the ISR it leads with, stop or delete a replica. Owned by the
broker's metadata thread; not thread-safe.

Why a guard: pysyncobj was seen rolling a follower's applied state back by hundreds of commands
when it installed a snapshot (pysyncobj 0.3.17, measured). Partition state is monotonic in
(leader_epoch, partition_epoch) for one topic id, so a record that is older than one already
seen is a regression: it is ignored and counted, never acted on. Deletions are acted on only
when a DeleteTopic command says so, never because a restored snapshot lacks a partition (a
rolled-back snapshot must not delete logs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .metadata_records import NO_LEADER, PartitionRecord, TopicPartition

__all__ = ["EventKind", "PartitionEvent", "PartitionListener"]


class EventKind(Enum):
    BECOME_LEADER = "become_leader"  # a new leader epoch in which we lead
    LEADER_UPDATE = "leader_update"  # we still lead this epoch; the ISR / partition epoch moved
    BECOME_FOLLOWER = (
        "become_follower"  # a new leader epoch in which another broker (or none) leads
    )
    FOLLOWER_UPDATE = "follower_update"  # same epoch, another broker leads; the ISR moved
    STOP_REPLICA = "stop_replica"  # we are no longer a replica (reassignment)
    DELETE_REPLICA = "delete_replica"  # the topic was deleted: remove the log


@dataclass(frozen=True, slots=True)
class PartitionEvent:
    kind: EventKind
    key: TopicPartition
    record: PartitionRecord | None  # None for DELETE_REPLICA / STOP_REPLICA of an unknown one


class PartitionListener:
    """Per-broker diff of partition records into events; see the module docstring."""

    def __init__(self, broker_id: int) -> None:
        self.broker_id = broker_id
        self._known: dict[TopicPartition, PartitionRecord] = {}  # the last record acted on
        self.regressions_ignored = 0  # records older than one already seen (counted, dropped)

    @property
    def known(self) -> dict[TopicPartition, PartitionRecord]:
        return dict(self._known)

    def record(self, key: TopicPartition) -> PartitionRecord | None:
        """The newest state seen of one partition (no copy of the whole map)."""
        return self._known.get(key)

    def changed(self, records: Iterable[PartitionRecord]) -> list[PartitionEvent]:
        events: list[PartitionEvent] = []
        for record in records:
            event = self._one(record)
            if event is not None:
                events.append(event)
        return events

    def deleted(self, keys: Iterable[TopicPartition]) -> list[PartitionEvent]:
        """Partitions removed by a DeleteTopic command."""
        events = []
        for key in keys:
            old = self._known.pop(key, None)
            if old is not None and self.broker_id in old.replicas:
                events.append(PartitionEvent(EventKind.DELETE_REPLICA, key, old))
        return events

    def _one(self, record: PartitionRecord) -> PartitionEvent | None:
        old = self._known.get(record.key)
        if old is not None and old.topic_id == record.topic_id:
            if (record.leader_epoch, record.partition_epoch) < (
                old.leader_epoch,
                old.partition_epoch,
            ):
                self.regressions_ignored += 1
                return None
            if record == old:
                return None
        elif old is not None and record.topic_id < old.topic_id:
            self.regressions_ignored += 1  # an older incarnation of a re-created topic
            return None
        self._known[record.key] = record
        me = self.broker_id
        if me not in record.replicas:
            if old is not None and me in old.replicas:
                return PartitionEvent(EventKind.STOP_REPLICA, record.key, record)
            return None
        # new to us: a new topic id, a new leader epoch, or a replica we just became (added by a
        # reassignment: the record was known, but without us)
        new_epoch = old is None or old.topic_id != record.topic_id
        new_epoch = new_epoch or record.leader_epoch != old.leader_epoch  # type: ignore[union-attr]
        new_epoch = new_epoch or me not in old.replicas  # type: ignore[union-attr]
        if record.leader == me:
            kind = EventKind.BECOME_LEADER if new_epoch else EventKind.LEADER_UPDATE
        else:
            kind = EventKind.BECOME_FOLLOWER if new_epoch else EventKind.FOLLOWER_UPDATE
        return PartitionEvent(kind, record.key, record)

    @staticmethod
    def leader_of(record: PartitionRecord) -> int | None:
        return None if record.leader == NO_LEADER else record.leader
