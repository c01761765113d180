"""The broker's replicas: their logs and roles, produce, fetch, and the two purgatories.

Owned by the broker's asyncio loop: every method runs on it, so nothing here takes a lock — the
loop serialises. Disk IO happens inline (an append is one ``writev`` into the page cache; a read
is a ``pread`` from it), which is what keeps the per-batch cost O(1) Python calls. The rules
that must be right live in ``replication.py`` (HW, ISR, truncation) and ``purgatory.py``; this
module wires them to logs, metadata events and requests, and answers with typed errors:

- Produce: unknown partition → UNKNOWN_TOPIC_OR_PARTITION; not the leader →
  NOT_LEADER_OR_FOLLOWER; a bad batch → CORRUPT_MESSAGE / INVALID_RECORD / MESSAGE_TOO_LARGE
  (nothing of that partition's request is appended); acks=all with fewer in-sync replicas than
  ``min.insync.replicas`` → NOT_ENOUGH_REPLICAS (nothing appended); then acks=all waits in the
  produce purgatory until the HW passes the batch (success, or NOT_ENOUGH_REPLICAS_AFTER_APPEND
  if the ISR shrank below the minimum) or the request times out (REQUEST_TIMED_OUT) or
  leadership moves (NOT_LEADER_OR_FOLLOWER: the outcome is unknown to the client). A broker that
  has not reached the controller for a session (``cut_off``) is fenced or about to be and its
  leaderships may have moved already: it answers every produce, waiting or new, with
  NOT_LEADER_OR_FOLLOWER, so clients look for the new leader at once instead of timing out.
- Fetch: consumers read below the HW, followers below the LEO; both long-poll in the fetch
  purgatory (woken by appends and HW moves). The fetcher's epochs are checked: an older
  current_leader_epoch → FENCED_LEADER_EPOCH, a newer one → UNKNOWN_LEADER_EPOCH, and a
  last_fetched_epoch that diverges from our log → a diverging epoch in the answer (KIP-320/595)
  so the fetcher truncates — never silently skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from raftlog.raft.listener import EventKind, PartitionEvent
from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord, TopicPartition, TopicRecord
from raftlog.raft.topic_config import effective_configs
from raftlog.segments import (
    BrokerStateStore,
    Log,
    LogConfig,
    StorageError,
    iter_batches,
    makedirs_durable,
    write_file_durable,
)
from raftlog.segments.clock import Clock, MonoMs, WallMs
from raftlog.segments.errors import CorruptRecordError, LogDirFullError

from .produce import Append, Duplicate, Refuse, produce_decision
from .producer_state import ProducerStateManager
from .purgatory import DelayedOperation, Purgatory, PurgatoryFullError
from .replication import IsrProposal, LeaderReplication, diverging_epoch, fetch_epoch_error

__all__ = [
    "FetchOutcome",
    "FetchSpec",
    "Partition",
    "ProduceOutcome",
    "ReplicaManager",
    "ReplicaManagerConfig",
]

logger = logging.getLogger(__name__)

CONSUMER = -1
_PARTITION_META = "partition.metadata"  # holds the topic id: a re-created topic is a new log


@dataclass(frozen=True, slots=True)
class ReplicaManagerConfig:
    broker_id: int
    data_dir: str
    replica_lag_ms_max: int = 10_000
    replica_silence_ms_max: int | None = None  # see BrokerConfig
    segment_bytes: int = 256 << 20
    flush_messages: int = -1
    flush_ms: int = -1
    fetch_wait_ms_max: int = 10_000
    purgatory_operations_max: int = 20_000
    producer_idle_ms_max: int = 24 * 3600 * 1000  # producer.id.expiration.ms
    verify_on_open_bytes_max: int = 256 << 20  # CRC-checked whole at open, all logs together


@dataclass(frozen=True, slots=True)
class ProduceOutcome:
    topic: str
    partition: int
    error: str = "NONE"  # an ErrorCode name
    message: str = ""
    base_offset: int = -1
    last_offset: int = -1
    log_start_offset: int = -1
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchSpec:
    topic: str
    partition: int
    fetch_offset: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    max_bytes: int = 1 << 20
    log_start_offset: int = -1


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    topic: str
    partition: int
    error: str = "NONE"
    message: str = ""
    high_watermark: int = -1
    log_start_offset: int = -1
    log_end_offset: int = -1
    records: bytes = b""
    diverging_epoch: tuple[int, int] | None = None
    leader_id: int = NO_LEADER
    leader_epoch: int = -1


class Partition:
    """One replica on this broker: its log and, while it leads, its replication state."""

    def __init__(self, key: TopicPartition, topic_id: int, log: Log, high_watermark: int) -> None:
        self.key = key
        self.topic_id = topic_id
        self.log = log
        self.record: PartitionRecord | None = None
        self.leader: LeaderReplication | None = None  # set while we lead
        self.producers = ProducerStateManager()  # idempotence: current through the LEO
        # the log was cut at damage (found at open, on a read or by the scrub) and the controller
        # has not yet taken us out of the ISR: until it has, we lead nothing (rule 7)
        self.damaged = False
        self.cut_off = False  # the broker lost the controller: waiting produces give up
        self._follower_hw = min(high_watermark, log.log_end_offset)  # while we follow

    @property
    def name(self) -> str:
        return f"{self.key[0]}-{self.key[1]}"

    @property
    def is_leader(self) -> bool:
        return self.leader is not None

    @property
    def high_watermark(self) -> int:
        return self.leader.high_watermark if self.leader else self._follower_hw

    def set_follower_hw(self, leader_hw: int) -> None:
        self._follower_hw = max(self._follower_hw, min(leader_hw, self.log.log_end_offset))
        # a follower's HW may pass its own log after truncation: keep 0 <= hw <= leo
        self._follower_hw = min(self._follower_hw, self.log.log_end_offset)

    @property
    def leader_epoch(self) -> int:
        return self.record.leader_epoch if self.record else -1

    @property
    def leader_id(self) -> int:
        return self.record.leader if self.record else NO_LEADER


# ---- delayed operations ------------------------------------------------------------------------


@dataclass(slots=True)
class _ProduceWait:
    partition: Partition
    outcome: ProduceOutcome  # what the append returned
    min_insync_replicas: int
    result: ProduceOutcome | None = None


class DelayedProduce(DelayedOperation):
    """acks=all: waits until the HW passes every appended batch of the request."""

    __slots__ = ("future", "waits")

    def __init__(self, deadline_ms: int, waits: list[_ProduceWait]) -> None:
        super().__init__(deadline_ms)
        self.waits = waits
        self.future: asyncio.Future[list[ProduceOutcome]] = (
            asyncio.get_running_loop().create_future()
        )

    def try_complete(self, now_ms: int) -> bool:
        for wait in self.waits:
            if wait.result is not None:
                continue
            partition = wait.partition
            if partition.leader is None or partition.leader_epoch != wait.outcome.leader_epoch:
                wait.result = _failed(wait.outcome, "NOT_LEADER_OR_FOLLOWER", "leadership moved")
                continue
            if partition.cut_off:
                wait.result = _failed(
                    wait.outcome, "NOT_LEADER_OR_FOLLOWER", "this broker lost the controller"
                )
                continue
            verdict = partition.leader.acks_all_outcome(
                wait.outcome.last_offset, wait.min_insync_replicas
            )
            if verdict == "NONE":
                wait.result = wait.outcome
            elif verdict is not None:
                wait.result = _failed(wait.outcome, verdict, "the ISR shrank below the minimum")
        if all(w.result is not None for w in self.waits):
            return self.force_complete()
        return False

    def on_complete(self) -> None:
        results = [
            w.result or _failed(w.outcome, "REQUEST_TIMED_OUT", "not replicated in time")
            for w in self.waits
        ]
        if not self.future.done():
            self.future.set_result(results)

    def on_expiration(self) -> None:
        pass


class DelayedFetch(DelayedOperation):
    """A fetch waiting for min_bytes to become readable (or for a leadership change)."""

    __slots__ = ("future", "manager", "min_bytes", "replica_id", "specs", "start_marks")

    def __init__(
        self,
        deadline_ms: int,
        manager: ReplicaManager,
        replica_id: int,
        specs: list[FetchSpec],
        min_bytes: int,
        start_marks: dict[TopicPartition, tuple[int, int]],
    ) -> None:
        super().__init__(deadline_ms)
        self.manager = manager
        self.replica_id = replica_id
        self.specs = specs
        self.min_bytes = min_bytes
        self.start_marks = start_marks  # (readable end, leader epoch) when we started waiting
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def try_complete(self, now_ms: int) -> bool:
        available = 0
        for spec in self.specs:
            partition = self.manager.partitions.get((spec.topic, spec.partition))
            mark = self.start_marks.get((spec.topic, spec.partition))
            if partition is None or mark is None:
                return self.force_complete()
            end = self.manager.readable_end(partition, self.replica_id)
            if partition.leader_epoch != mark[1] or end < mark[0]:
                return self.force_complete()  # leadership or the log moved under us
            available += self.manager.estimated_bytes(partition, spec.fetch_offset, end)
        if available >= self.min_bytes:
            return self.force_complete()
        return False

    def on_complete(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def on_expiration(self) -> None:
        pass


_WAITABLE = ("NONE", "DUPLICATE_SEQUENCE_NUMBER")  # a duplicate waits until its original commits


def _failed(outcome: ProduceOutcome, error: str, message: str) -> ProduceOutcome:
    return ProduceOutcome(outcome.topic, outcome.partition, error, message)


# ---- the manager ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    produce_batches: int = 0
    produce_bytes: int = 0
    fetch_requests: int = 0
    isr_proposals: int = 0
    truncations: int = 0
    storage_errors: int = 0
    duplicates: int = 0
    producer_batches_replayed: int = 0
    damaged_replicas: int = 0
    scrubbed_bytes: int = 0


@dataclass(slots=True)
class ReplicaManager:
    """Every replica this broker holds. See the module docstring."""

    config: ReplicaManagerConfig
    state: BrokerStateStore
    clock: Clock  # wall time for the logs and producer expiry, monotonic for everything else
    topic_lookup: Callable[[str], TopicRecord | None]  # current topic metadata
    propose_isr: Callable[[Partition, IsrProposal], None]  # sends AlterPartition (async)
    follower_changed: Callable[[Partition], None]  # the fetcher manager re-plans
    broker_eligible: Callable[[int], bool]  # registered and unfenced in the metadata
    background: Callable[[Callable[[], None]], None] | None = None  # off-loop fsyncs
    partitions: dict[TopicPartition, Partition] = field(default_factory=dict)
    produce_purgatory: Purgatory[TopicPartition] = field(init=False)
    fetch_purgatory: Purgatory[TopicPartition] = field(init=False)
    counters: _Counters = field(default_factory=_Counters)
    damaged: set[TopicPartition] = field(default_factory=set)  # to report to the controller
    scrub_bytes_per_call: int = 4 << 20  # the background scrub's budget per call
    _scrub_cursor: int = 0  # round-robin position of the scrub over the partitions
    _verify_on_open_left: int = 0  # what is left of verify_on_open_bytes_max
    ready: bool = False  # metadata caught up: until then we serve nothing
    cut_off: str | None = None  # why produces are refused: see ``set_cut_off``

    def __post_init__(self) -> None:
        now = self.clock.mono_ms()
        self.produce_purgatory = Purgatory(
            max_operations=self.config.purgatory_operations_max, start_ms=now
        )
        self.fetch_purgatory = Purgatory(
            max_operations=self.config.purgatory_operations_max, start_ms=now
        )
        makedirs_durable(self.config.data_dir)
        self._verify_on_open_left = self.config.verify_on_open_bytes_max

    # ---- logs ----------------------------------------------------------------------------------

    def log_config(self, topic: TopicRecord | None) -> LogConfig:
        explicit = dict(topic.configs) if topic else {}
        merged = effective_configs(explicit.items())

        def value(name: str, broker_default: int) -> int:
            return int(explicit[name]) if name in explicit else broker_default

        retention_ms = int(merged["retention.ms"])
        retention_bytes = int(merged["retention.bytes"])
        flush_messages = value("flush.messages", self.config.flush_messages)
        flush_ms = value("flush.ms", self.config.flush_ms)
        return LogConfig(
            segment_bytes=value("segment.bytes", self.config.segment_bytes),
            segment_ms=int(merged["segment.ms"]),
            max_message_bytes=int(merged["max.message.bytes"]),
            retention_ms=None if retention_ms < 0 else retention_ms,
            retention_bytes=None if retention_bytes < 0 else retention_bytes,
            flush_messages=None if flush_messages < 0 else flush_messages,
            flush_ms=None if flush_ms < 0 else flush_ms,
        )

    def _directory(self, key: TopicPartition) -> str:
        return os.path.join(self.config.data_dir, f"{key[0]}-{key[1]}")

    def _open(self, record: PartitionRecord) -> Partition:
        existing = self.partitions.get(record.key)
        if existing is not None and existing.topic_id == record.topic_id:
            return existing
        if existing is not None:  # a re-created topic: the old replica goes
            self._remove(existing, delete=True)
        directory = self._directory(record.key)
        name = f"{record.topic}-{record.partition}"
        meta = os.path.join(directory, _PARTITION_META)
        if os.path.isdir(directory):
            try:
                with open(meta) as f:
                    on_disk = int(f.read().strip() or -1)
            except (OSError, ValueError):
                on_disk = -1
            if on_disk != record.topic_id:
                logger.warning("%s: stale log of topic id %s removed", name, on_disk)
                shutil.rmtree(directory)
                self.state.delete_partition(name)
        else:
            on_disk = -1
        if on_disk != record.topic_id:
            # the directory and its topic id must survive a power loss (names need their
            # parent directory fsynced), or a reboot would find a stranger's log
            makedirs_durable(directory)
            write_file_durable(meta, f"{record.topic_id}\n".encode())
        topic_log = Log(
            directory,
            self.log_config(self.topic_lookup(record.topic)),
            clock=self.clock,
            state=self.state,
            name=name,
            background=self.background,
        )
        hw = self.state.get_offset("hw", name) or 0
        partition = Partition(record.key, record.topic_id, topic_log, hw)
        partition.cut_off = self.cut_off is not None
        self._rebuild_producers(partition)
        self.partitions[record.key] = partition
        found = topic_log.recovery
        if found.damaged:
            logger.error(
                "%s: damaged log cut at offset %s at open (%s); it leads nothing until it has "
                "caught up from a healthy leader",
                name,
                found.first_bad_offset,
                found.reason,
            )
            self._mark_damaged(partition)
        elif topic_log.size_bytes <= self._verify_on_open_left:
            # segments below the recovery point were fsynced, not necessarily intact: logs are
            # checked whole at open (~2 GB/s) until the budget is spent, the rest by the scrub
            self._verify_on_open_left -= topic_log.size_bytes
            bad = topic_log.verify()
            if bad is not None:
                self.on_damage(partition, bad, "found at open")
        return partition

    # ---- damage (rule 7 of the metadata machine) -------------------------------------------------

    def _mark_damaged(self, partition: Partition) -> None:
        """Stop leading at once; the broker reports the partition to the controller."""
        self.counters.damaged_replicas += 1
        partition.damaged = True
        self.damaged.add(partition.key)
        if partition.leader is not None:
            partition._follower_hw = min(
                partition.leader.high_watermark, partition.log.log_end_offset
            )
            partition.leader = None
            self._wake(partition.key)

    def on_damage(self, partition: Partition, offset: int | None, reason: str) -> None:
        """Corruption found in a running log at ``offset``: cut the log there (the range is
        fetched again from a healthy leader) and step down."""
        log_ = partition.log
        logger.error(
            "%s: damaged log at offset %s (%s): cutting the log there",
            partition.name,
            offset,
            reason,
        )
        self._mark_damaged(partition)
        if offset is None:
            offset = log_.verify()
        if offset is not None and offset < log_.log_end_offset:
            try:
                self.truncate(partition, max(offset, log_.log_start_offset))
            except StorageError as exc:
                logger.error("%s: cannot cut the damaged log: %s", partition.name, exc)

    def damage_reported(self, keys: Iterable[TopicPartition]) -> None:
        """The controller committed our report: the metadata no longer trusts these replicas."""
        for key in keys:
            self.damaged.discard(key)
            partition = self.partitions.get(key)
            if partition is not None:
                partition.damaged = False

    def scrub(self) -> int:
        """Verify closed segments at a bounded rate (``scrub_bytes_per_call``), round-robin over
        the partitions; damage found is handled like damage found on a read."""
        keys = sorted(self.partitions)
        budget = self.scrub_bytes_per_call
        checked = 0
        for _ in range(len(keys)):
            if budget <= 0:
                break
            self._scrub_cursor %= len(keys)
            partition = self.partitions[keys[self._scrub_cursor]]
            try:
                result = partition.log.scrub(budget)
            except StorageError as exc:
                logger.error("%s: scrub failed: %s", partition.name, exc)
                result = None
            if result is not None:
                budget -= max(result.bytes_checked, 1)
                checked += result.bytes_checked
                if result.damaged_offset is not None:
                    self.on_damage(partition, result.damaged_offset, "found by the scrub")
            self._scrub_cursor += 1
        self.counters.scrubbed_bytes += checked
        return checked

    def _remove(self, partition: Partition, *, delete: bool) -> None:
        self.partitions.pop(partition.key, None)
        partition.leader = None
        self._wake(partition.key)
        try:
            if delete:
                partition.log.delete()
                with contextlib.suppress(OSError):
                    shutil.rmtree(self._directory(partition.key))
                self.state.delete_partition(partition.name)
            else:
                partition.log.close()
        except StorageError as exc:
            logger.error("%s: %s", partition.name, exc)

    def set_cut_off(self, reason: str | None) -> None:
        """This broker has not reached the controller for a session (``reason`` says so), or
        has again (None). Cut off, every waiting produce is answered NOT_LEADER_OR_FOLLOWER now
        and new ones are refused (module docstring); replication goes on."""
        if (reason is None) == (self.cut_off is None):
            self.cut_off = reason
            return
        self.cut_off = reason
        if reason is not None:
            logger.warning("%s: refusing produces", reason)
        for key, partition in self.partitions.items():
            partition.cut_off = reason is not None
            if reason is not None and partition.leader is not None:
                self._wake(key)

    def release_waiters(self) -> None:
        """Answer every waiting produce and fetch now (shutdown): nobody is left hanging."""
        for key in list(self.partitions):
            partition = self.partitions[key]
            if partition.leader is not None:
                partition._follower_hw = partition.leader.high_watermark  # kept for the checkpoint
            partition.leader = None  # produces answer NOT_LEADER_OR_FOLLOWER, fetches return
            self._wake(key)

    def close(self) -> None:
        self.checkpoint()
        for partition in list(self.partitions.values()):
            self._remove(partition, delete=False)

    # ---- metadata events -----------------------------------------------------------------------

    def apply_events(self, events: Iterable[PartitionEvent]) -> None:
        now = self.clock.mono_ms()
        for event in events:
            record = event.record
            match event.kind:
                case EventKind.BECOME_LEADER:
                    assert record is not None
                    partition = self._open(record)
                    partition.record = record
                    if partition.damaged:
                        logger.warning("%s: not leading a damaged replica", partition.name)
                        partition.leader = None
                        self._wake(record.key)
                        continue
                    log_end = partition.log.log_end_offset
                    partition.leader = LeaderReplication.start(
                        self.config.broker_id,
                        record.replicas,
                        record.isr,
                        record.leader_epoch,
                        record.partition_epoch,
                        log_end,
                        partition.high_watermark,
                        self.config.replica_lag_ms_max,
                        now,
                        self._min_isr(record.topic),
                        self.config.replica_silence_ms_max,
                    )
                    partition.leader.update_high_watermark(log_end)
                    self.follower_changed(partition)
                    self._wake(record.key)
                case EventKind.LEADER_UPDATE:
                    assert record is not None
                    partition = self._open(record)
                    partition.record = record
                    if partition.leader is not None:
                        partition.leader.update_from_metadata(record.isr, record.partition_epoch)
                        partition.leader.min_insync_replicas = self._min_isr(record.topic)
                        partition.leader.update_high_watermark(partition.log.log_end_offset)
                    self._wake(record.key)
                case EventKind.BECOME_FOLLOWER | EventKind.FOLLOWER_UPDATE:
                    assert record is not None
                    partition = self._open(record)
                    was_leader = partition.leader is not None
                    if was_leader and partition.leader is not None:
                        partition._follower_hw = partition.leader.high_watermark
                    partition.leader = None
                    partition.record = record
                    if event.kind is EventKind.BECOME_FOLLOWER or was_leader:
                        self.follower_changed(partition)
                        self._wake(record.key)
                case EventKind.STOP_REPLICA | EventKind.DELETE_REPLICA:
                    found = self.partitions.get(event.key)
                    if found is not None:
                        self._remove(found, delete=event.kind is EventKind.DELETE_REPLICA)
                        self.follower_changed(found)

    def _min_isr(self, topic: str) -> int:
        record = self.topic_lookup(topic)
        return record.min_insync_replicas if record else 1

    def _wake(self, key: TopicPartition) -> None:
        now = self.clock.mono_ms()
        self.produce_purgatory.check_and_complete(key, now)
        self.fetch_purgatory.check_and_complete(key, now)

    # ---- produce ---------------------------------------------------------------------------------

    def _leader_partition(self, topic: str, index: int) -> tuple[Partition | None, str, str]:
        if not self.ready:
            return None, "LEADER_NOT_AVAILABLE", "this broker is still loading metadata"
        partition = self.partitions.get((topic, index))
        if partition is None:
            record = self.topic_lookup(topic)
            if record is None:
                return None, "UNKNOWN_TOPIC_OR_PARTITION", f"no topic {topic!r}"
            if not 0 <= index < record.partitions:
                return (
                    None,
                    "UNKNOWN_TOPIC_OR_PARTITION",
                    f"topic {topic!r} has partitions 0-{record.partitions - 1}",
                )
            return None, "NOT_LEADER_OR_FOLLOWER", f"this broker holds no {topic}-{index}"
        if partition.leader is None:
            return (
                None,
                "NOT_LEADER_OR_FOLLOWER",
                (f"{partition.name} is led by broker {partition.leader_id}"),
            )
        if self.cut_off is not None:
            return None, "NOT_LEADER_OR_FOLLOWER", self.cut_off
        return partition, "NONE", ""

    def append(
        self, topic: str, index: int, records: bytes, acks: int
    ) -> tuple[ProduceOutcome, Partition | None, int]:
        """Validate and append one partition's batches as leader; (outcome, partition, min ISR)."""
        partition, error, message = self._leader_partition(topic, index)
        if partition is None or partition.leader is None:
            return ProduceOutcome(topic, index, error, message), None, 0
        min_isr = self._min_isr(topic)
        partition.leader.min_insync_replicas = min_isr  # follows config changes
        log_ = partition.log
        epoch = partition.leader.leader_epoch
        decision = produce_decision(
            records,
            acks,
            len(partition.leader.isr),
            min_isr,
            log_.config.max_message_bytes,
            partition.producers,
        )
        match decision:
            case Refuse(code, message):
                if code == "NOT_ENOUGH_REPLICAS":
                    message = f"{partition.name}: {message}"
                return ProduceOutcome(topic, index, code, message), None, 0
            case Duplicate(stored):
                self.counters.duplicates += 1
                duplicate = ProduceOutcome(
                    topic,
                    index,
                    "DUPLICATE_SEQUENCE_NUMBER",
                    f"a retry of the batch stored at {stored.first_offset}",
                    stored.first_offset,
                    stored.last_offset,
                    log_.log_start_offset,
                    epoch,
                )
                return duplicate, partition, min_isr
            case Append(batches, headers):
                pass
            case _:
                assert_never(decision)
        try:
            first = last = None
            for batch, header in zip(batches, headers, strict=True):
                info = log_.append(batch, leader_epoch=epoch, header=header)
                if header.producer_id >= 0:
                    partition.producers.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.last_sequence,
                        info.base_offset,
                        info.last_offset,
                        # the batch's own time, as the rebuild from the log uses: every replica
                        # then expires the same producers (a new leader must dedupe like the old)
                        WallMs(header.max_timestamp),
                    )
                first = info if first is None else first
                last = info
                self.counters.produce_batches += 1
                self.counters.produce_bytes += len(batch)
        except StorageError as exc:
            if isinstance(exc, LogDirFullError) or exc.code == "KAFKA_STORAGE_ERROR":
                self.counters.storage_errors += 1
            return ProduceOutcome(topic, index, exc.code, str(exc)), None, 0
        assert first is not None and last is not None
        leader = partition.leader
        if leader.update_high_watermark(log_.log_end_offset):
            self._wake(partition.key)
        else:
            self.fetch_purgatory.check_and_complete(partition.key, self.clock.mono_ms())
        outcome = ProduceOutcome(
            topic,
            index,
            "NONE",
            "",
            first.base_offset,
            last.last_offset,
            log_.log_start_offset,
            epoch,
        )
        return outcome, partition, min_isr

    async def produce(
        self, acks: int, timeout_ms: int, items: list[tuple[str, int, bytes]]
    ) -> list[ProduceOutcome]:
        if acks not in (-1, 0, 1):
            return [
                ProduceOutcome(t, p, "INVALID_REQUIRED_ACKS", "acks must be 0, 1 or all (-1)")
                for t, p, _ in items
            ]
        outcomes: list[ProduceOutcome] = []
        waits: list[_ProduceWait] = []
        waiting_at: list[int] = []  # each wait's place in ``outcomes`` (a partition may repeat)
        for topic, index, records in items:
            outcome, partition, min_isr = self.append(topic, index, records, acks)
            if acks == -1 and partition is not None and outcome.error in _WAITABLE:
                waits.append(_ProduceWait(partition, outcome, min_isr))
                waiting_at.append(len(outcomes))
            outcomes.append(outcome)
        if not waits:
            return outcomes
        now = self.clock.mono_ms()
        op = DelayedProduce(now + max(0, timeout_ms), waits)
        keys = {w.partition.key for w in waits}
        try:
            self.produce_purgatory.try_complete_else_watch(op, keys, now)
        except PurgatoryFullError:
            op.force_complete()  # answers REQUEST_TIMED_OUT for what is not yet replicated
        for place, result in zip(waiting_at, await op.future, strict=True):
            outcomes[place] = result
        return outcomes

    # ---- fetch -----------------------------------------------------------------------------------

    @staticmethod
    def estimated_bytes(partition: Partition, start: int, end: int) -> int:
        """Bytes between two offsets, estimated from the log's average bytes per record (a
        fetch's min_bytes is a wake-up threshold, not a promise; any record counts as >= 1)."""
        if end <= start:
            return 0
        log_ = partition.log
        records = max(1, log_.log_end_offset - log_.log_start_offset)
        return max(1, (end - start) * log_.size_bytes // records)

    def readable_end(self, partition: Partition, replica_id: int) -> int:
        """Followers read up to the LEO, consumers up to the HW."""
        if replica_id == CONSUMER:
            return partition.high_watermark
        return partition.log.log_end_offset

    def check_leader(
        self, spec: FetchSpec, replica_id: int
    ) -> tuple[Partition | None, FetchOutcome]:
        topic, index = spec.topic, spec.partition
        if not self.ready:
            return None, FetchOutcome(topic, index, "LEADER_NOT_AVAILABLE", "loading metadata")
        partition = self.partitions.get((topic, index))
        if partition is None:
            record = self.topic_lookup(topic)
            code = (
                "UNKNOWN_TOPIC_OR_PARTITION"
                if record is None or not 0 <= index < record.partitions
                else "NOT_LEADER_OR_FOLLOWER"
            )
            return None, FetchOutcome(topic, index, code, f"no replica of {topic}-{index} here")
        leader = partition.leader
        base = FetchOutcome(
            topic, index, leader_id=partition.leader_id, leader_epoch=partition.leader_epoch
        )
        if leader is None:
            return None, _with(
                base, "NOT_LEADER_OR_FOLLOWER", f"{partition.name} is led by {partition.leader_id}"
            )
        stale = fetch_epoch_error(spec.current_leader_epoch, leader.leader_epoch)
        if stale is not None:
            return None, _with(base, *stale)
        if replica_id != CONSUMER and replica_id not in leader.followers:
            return None, _with(
                base,
                "NOT_LEADER_OR_FOLLOWER",
                f"broker {replica_id} is not a replica of {partition.name}",
            )
        return partition, base

    def read_one(
        self,
        spec: FetchSpec,
        replica_id: int,
        max_bytes: int,
        *,
        record_progress: bool = True,
        replica_incarnation: int = -1,
    ) -> FetchOutcome:
        """Read one partition for a fetch; a follower's fetch also reports its progress (once
        per request: a re-read after a long poll proves nothing new), as the broker
        incarnation ``replica_incarnation``."""
        partition, base = self.check_leader(spec, replica_id)
        if partition is None or partition.leader is None:
            return base
        log_ = partition.log
        now = self.clock.mono_ms()
        diverging = diverging_epoch(
            spec.last_fetched_epoch,
            spec.fetch_offset,
            log_.end_offset_for_epoch,
            log_.log_start_offset,
        )
        if replica_id != CONSUMER and record_progress:
            # A fetch offset counts as the follower's log end only when its log agrees with
            # ours up to there (KIP-320 / Kafka's fetchRecords). A follower that replicated a
            # deposed leader's uncommitted tail fetches from past that tail; counting it would
            # let the HW (and the ISR) take records the follower does not have, and a later
            # election of that follower would cut acknowledged records.
            if diverging is None and partition.leader.on_follower_fetch(
                replica_id, spec.fetch_offset, log_.log_end_offset, now, replica_incarnation
            ):
                self._wake(partition.key)
            self._maybe_propose(partition, now)
        hw = partition.high_watermark
        common: dict[str, Any] = dict(
            high_watermark=hw,
            log_start_offset=log_.log_start_offset,
            log_end_offset=log_.log_end_offset,
        )
        if diverging is not None:
            return _with(base, **common, diverging_epoch=diverging)
        end = hw if replica_id == CONSUMER else log_.log_end_offset
        if spec.fetch_offset < log_.log_start_offset or spec.fetch_offset > log_.log_end_offset:
            return _with(
                base,
                "OFFSET_OUT_OF_RANGE",
                f"offset {spec.fetch_offset} is outside [{log_.log_start_offset}, "
                f"{log_.log_end_offset}] of {partition.name}",
                **common,
            )
        if spec.fetch_offset >= end or max_bytes <= 0:
            return _with(base, **common)
        try:
            result = log_.read(spec.fetch_offset, min(spec.max_bytes, max_bytes), max_offset=end)
        except CorruptRecordError as exc:
            # our copy is damaged: an intact replica must serve this (rule 7); clients retry
            # after refreshing metadata, followers back off until the new leader is known
            self.on_damage(partition, getattr(exc, "offset", None), str(exc))
            return _with(base, "KAFKA_STORAGE_ERROR", f"{partition.name}: {exc}", **common)
        except StorageError as exc:
            return _with(base, exc.code, str(exc), **common)
        return _with(base, records=result.data, **common)

    async def fetch(
        self,
        replica_id: int,
        specs: list[FetchSpec],
        *,
        max_wait_ms: int,
        min_bytes: int,
        max_bytes: int,
        replica_incarnation: int,
    ) -> list[FetchOutcome]:
        """Serve a fetch; a follower's (``replica_id`` >= 0) reports its progress as broker
        incarnation ``replica_incarnation`` (-1 for consumers)."""
        self.counters.fetch_requests += 1
        outcomes = self._read_all(replica_id, specs, max_bytes, replica_incarnation)
        got = sum(len(o.records) for o in outcomes)
        errors = any(o.error != "NONE" or o.diverging_epoch for o in outcomes)
        if got >= min_bytes or errors or max_wait_ms <= 0 or not specs:
            return outcomes
        now = self.clock.mono_ms()
        marks = {}
        for spec in specs:
            partition = self.partitions.get((spec.topic, spec.partition))
            if partition is not None:
                marks[partition.key] = (
                    self.readable_end(partition, replica_id),
                    partition.leader_epoch,
                )
        wait_ms = min(max_wait_ms, self.config.fetch_wait_ms_max)
        op = DelayedFetch(now + wait_ms, self, replica_id, specs, max(min_bytes, 1), marks)
        try:
            self.fetch_purgatory.try_complete_else_watch(op, set(marks), now)
        except PurgatoryFullError:
            return outcomes
        await op.future
        return self._read_all(replica_id, specs, max_bytes, -1, record_progress=False)

    def _read_all(
        self,
        replica_id: int,
        specs: list[FetchSpec],
        max_bytes: int,
        replica_incarnation: int,
        *,
        record_progress: bool = True,
    ) -> list[FetchOutcome]:
        outcomes = []
        budget = max_bytes
        for spec in specs:
            outcome = self.read_one(
                spec,
                replica_id,
                budget,
                record_progress=record_progress,
                replica_incarnation=replica_incarnation,
            )
            outcomes.append(outcome)
            if outcome.records:
                # at least one batch always comes back, then the budget is a hard stop
                budget = max(0, budget - len(outcome.records))
        return outcomes

    # ---- ISR -------------------------------------------------------------------------------------

    def _maybe_propose(self, partition: Partition, now_ms: MonoMs) -> None:
        leader = partition.leader
        if leader is None:
            return
        proposal = leader.check_isr(partition.log.log_end_offset, now_ms, self.broker_eligible)
        if proposal is not None:
            self.counters.isr_proposals += 1
            self.propose_isr(partition, proposal)
            # a pending addition joins the maximal ISR: the HW may have to wait for it, never
            # the reverse; a pending removal changes nothing until committed
            leader.update_high_watermark(partition.log.log_end_offset)

    def proposal_done(
        self, key: TopicPartition, proposal: IsrProposal, outcome: bool | None
    ) -> None:
        """The AlterPartition's outcome (``alter_partition_outcome``): True committed, False
        refused and never applied, None unknown (it stays pending and is sent again)."""
        partition = self.partitions.get(key)
        if partition is not None and partition.leader is not None:
            partition.leader.proposal_answered(proposal, outcome, self.clock.mono_ms())

    def isr_committed(
        self, key: TopicPartition, leader_epoch: int, isr: Iterable[int], partition_epoch: int
    ) -> None:
        """The controller's answer to our AlterPartition carried the partition's committed ISR:
        act on it now, as Kafka's leader does, rather than wait for our metadata to apply it — a
        broker that reaches the controller only through a relay may not see the metadata move
        until the fault heals. Only for our own leader epoch; a newer partition epoch only."""
        partition = self.partitions.get(key)
        leader = partition.leader if partition is not None else None
        if partition is None or leader is None or leader.leader_epoch != leader_epoch:
            return
        leader.update_from_metadata(isr, partition_epoch)
        leader.update_high_watermark(partition.log.log_end_offset)
        self._wake(key)

    def periodic(self) -> None:
        """Called every few hundred ms: ISR checks, purgatory expiry, ``flush.ms``."""
        now = self.clock.mono_ms()
        wall = self.clock.wall_ms()
        for partition in self.partitions.values():
            if partition.leader is not None:
                self._maybe_propose(partition, now)
            if partition.log.config.flush_ms is not None:
                try:  # an idle partition's unsynced tail is bounded in time too
                    partition.log.maybe_flush(wall)
                except StorageError as exc:
                    logger.error("%s: flush.ms: %s", partition.name, exc)
        self.produce_purgatory.advance_clock(now)
        self.fetch_purgatory.advance_clock(now)

    def expire(self) -> None:
        now = self.clock.mono_ms()
        self.produce_purgatory.advance_clock(now)
        self.fetch_purgatory.advance_clock(now)

    def checkpoint(self) -> None:
        """Periodic: high watermarks and changed producer states to LMDB."""
        self.checkpoint_high_watermarks()
        self.snapshot_producers()

    def checkpoint_high_watermarks(self) -> None:
        offsets = {p.name: p.high_watermark for p in self.partitions.values()}
        if offsets:
            try:
                self.state.save_offsets("hw", offsets)
            except Exception as exc:  # lmdb raises its own types; a failed checkpoint is retried
                logger.error("high-watermark checkpoint failed: %s", exc)

    def enforce_retention(self) -> int:
        deleted = 0
        now = self.clock.wall_ms()  # compared with record timestamps
        for partition in self.partitions.values():
            try:
                # a leader keeps what is not yet committed; a follower follows the leader's start
                deleted += partition.log.delete_retained(now, max_offset=partition.high_watermark)
            except StorageError as exc:
                logger.error("%s: retention: %s", partition.name, exc)
        return deleted

    # ---- follower side ---------------------------------------------------------------------------

    def followed_partitions(self) -> Iterator[Partition]:
        for partition in self.partitions.values():
            if partition.leader is None and partition.record is not None:
                yield partition

    def follower_append(self, partition: Partition, records: bytes, leader_hw: int) -> int:
        """Append fetched batches; return bytes appended. Raises StorageError."""
        if records:
            infos = partition.log.append_as_follower(records)
            for (_, header), info in zip(
                iter_batches(records, verify_crc=False), infos, strict=True
            ):
                if header.producer_id >= 0:
                    partition.producers.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.last_sequence,
                        info.base_offset,
                        info.last_offset,
                        WallMs(header.max_timestamp),  # as the leader and the rebuild do
                    )
        partition.set_follower_hw(leader_hw)
        return len(records)

    # ---- producer state ----------------------------------------------------------------------

    def _rebuild_producers(self, partition: Partition) -> None:
        """Producer state from the newest snapshot at or below the LEO, plus the batches after
        it (the whole log when no snapshot fits: O(log), only after an unusual truncation)."""
        log_ = partition.log
        saved = self.state.get_blob("producers", partition.name)
        if isinstance(saved, dict) and saved.get("offset", -1) > log_.log_end_offset:
            # above the log's end (a power loss took the tail): never to be trusted once the
            # log grows past it again with other batches (see truncate())
            self.state.delete_blob("producers", partition.name)
            saved = None
        start = log_.log_start_offset
        state = ProducerStateManager()
        if isinstance(saved, dict) and log_.log_start_offset <= saved.get("offset", -1) <= (
            log_.log_end_offset
        ):
            try:
                state = ProducerStateManager.from_snapshot(saved["state"])
                start = int(saved["offset"])
            except (KeyError, TypeError, ValueError):
                state, start = ProducerStateManager(), log_.log_start_offset
        replayed = 0
        try:
            for header in log_.iter_headers(start):
                if header.base_offset < start:
                    continue  # the batch holding ``start`` began before it: already counted
                if header.producer_id >= 0:
                    state.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.last_sequence,
                        header.base_offset,
                        header.last_offset,
                        WallMs(header.max_timestamp),
                    )
                replayed += 1
        except StorageError as exc:
            logger.error(
                "%s: producer state rebuilt up to a corrupt batch: %s", partition.name, exc
            )
        state.dirty = True
        partition.producers = state
        self.counters.producer_batches_replayed += replayed

    def snapshot_producers(self) -> int:
        """Write the producer state of every partition that changed; how many were written."""
        written = 0
        for partition in self.partitions.values():
            if partition.producers.dirty:
                body = {
                    "offset": partition.log.log_end_offset,
                    "state": partition.producers.to_snapshot(),
                }
                try:
                    self.state.put_blob("producers", partition.name, body)
                except Exception as exc:  # lmdb's own types; retried at the next interval
                    logger.error("%s: producer snapshot failed: %s", partition.name, exc)
                    continue
                partition.producers.dirty = False
                written += 1
        return written

    def expire_producers(self) -> int:
        now = self.clock.wall_ms()  # compared with batch timestamps
        return sum(
            p.producers.expire(now, self.config.producer_idle_ms_max)
            for p in self.partitions.values()
        )

    def truncate(self, partition: Partition, offset: int) -> None:
        log_ = partition.log
        self.counters.truncations += 1
        # A producer snapshot above the cut describes batches about to go: once the log grows
        # past it again with other batches, a restart would take it for the truth (and answer a
        # retry of a lost batch as a duplicate). Gone before the cut, so no crash can keep it;
        # the next snapshot round writes the state at the new end.
        self._drop_producer_snapshot_above(partition, offset)
        if offset < log_.log_start_offset:
            log_.truncate_fully_and_start_at(offset)
        else:
            log_.truncate_to(offset)
        partition.set_follower_hw(0)
        if partition.producers.truncated(log_.log_end_offset):
            self._rebuild_producers(partition)
        partition.producers.dirty = True

    def _drop_producer_snapshot_above(self, partition: Partition, offset: int) -> None:
        saved = self.state.get_blob("producers", partition.name)
        if isinstance(saved, dict) and saved.get("offset", -1) > offset:
            self.state.delete_blob("producers", partition.name)

    # ---- describing ------------------------------------------------------------------------------

    def leader_end_offset_for(
        self, topic: str, index: int, current_leader_epoch: int, epoch: int
    ) -> tuple[str, str, int, int]:
        """OffsetForLeaderEpoch: (error, message, epoch, end offset)."""
        partition, base = self.check_leader(FetchSpec(topic, index, 0, current_leader_epoch), -1)
        if partition is None:
            return base.error, base.message, -1, -1
        found_epoch, end = partition.log.end_offset_for_epoch(epoch)
        return "NONE", "", found_epoch, end


def _with(
    outcome: FetchOutcome, error: str = "NONE", message: str = "", **fields: Any
) -> FetchOutcome:
    return replace(outcome, error=error, message=message, **fields)
