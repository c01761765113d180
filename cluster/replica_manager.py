"""The broker's replicas: their roles from the metadata, produce, fetch, and the two purgatories.

Owned by the broker's asyncio loop: every method runs on it, so nothing here takes a lock — the
loop serialises. Disk IO happens inline (an append is one ``writev`` into the page cache; a read
is a ``pread`` from it), which is what keeps the per-batch cost O(1) Python calls. This module
wires the rules to logs, metadata events and requests; the rules that must be right live apart:

- ``replica_rules.py``: which answer a produce or a fetch gets (leadership, leader epochs —
  FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH —, offsets out of range, when a fetch waits);
- ``produce.py``: a produce's batches (CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, NOT_ENOUGH_REPLICAS
  before anything is appended, idempotent duplicates and sequences);
- ``replication.py``: HW, ISR, a diverging epoch in a fetch's answer (KIP-320/595) so the
  fetcher truncates — never silently skips;
- ``delayed.py`` and ``purgatory.py``: acks=all waits until the HW passes its batches (or
  NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER when leadership
  moves: the outcome is unknown to the client); fetches long-poll, woken by appends and HW moves.

One replica and its files are ``partition.py``; its producer state's snapshots and rebuild
``producer_snapshots.py``. A broker that has not reached the controller for a session
(``set_cut_off``) is fenced or about to be and its leaderships may have moved already: it answers
every produce, waiting or new, with NOT_LEADER_OR_FOLLOWER, so clients look for the new leader at
once instead of timing out.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from raftlog.proto.codes import ErrorCode
from raftlog.raft.listener import EventKind, PartitionEvent
from raftlog.raft.metadata_records import PartitionRecord, TopicPartition, TopicRecord
from raftlog.raft.topic_config import cleanup_policy
from raftlog.segments import (
    BrokerStateStore,
    StorageError,
    makedirs_durable,
)
from raftlog.segments.clock import Clock, MonoMs
from raftlog.segments.errors import CorruptRecordError

from .delayed import DelayedFetch, DelayedProduce, ProduceWait
from .log_cleaner import LogCleaner
from .partition import (
    Partition,
    log_config,
    open_partition_log,
    remove_partition_files,
    stray_directories,
)
from .produce import Append, Duplicate, Refuse, produce_decision
from .producer_snapshots import (
    drop_producer_snapshot_above,
    rebuild_producers,
    snapshot_producers,
)
from .purgatory import Purgatory, PurgatoryFullError
from .replica_rules import (
    CONSUMER,
    WAITABLE,
    FetchOutcome,
    FetchSpec,
    ProduceOutcome,
    acks_error,
    fetch_answers_now,
    fetch_offset_error,
    fetch_target_error,
    produce_target_error,
    read_bytes_limit,
    readable_end,
)
from .replication import IsrProposal, LeaderReplication, diverging_epoch
from .throttle import ByteRateLimit
from .traffic import Traffic

__all__ = ["ReplicaManager", "ReplicaManagerConfig"]

logger = logging.getLogger(__name__)


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
    log_cleaner_io_bytes_per_s: int = 10 << 20  # compaction's reads and writes together


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
    damaged: set[TopicPartition] = field(default_factory=set)  # to report to the controller
    scrub_bytes_per_call: int = 4 << 20  # the background scrub's budget per call
    _scrub_cursor: int = 0  # round-robin position of the scrub over the partitions
    _verify_on_open_left: int = 0  # what is left of verify_on_open_bytes_max
    ready: bool = False  # metadata caught up: until then we serve nothing
    cut_off: str | None = None  # why produces are refused: see ``set_cut_off``
    traffic: Traffic = field(default_factory=Traffic)  # read by /metrics and the status rates
    # called after an operation starts waiting in a purgatory: the broker's expiry timer
    # (``tasks.DeadlineTimer``) re-arms for its deadline instead of polling the purgatories
    on_watch: Callable[[], None] | None = None
    cleaner: LogCleaner = field(init=False)  # compacts the compacted topics' logs

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
        self.cleaner = LogCleaner(self.clock, io_bytes_per_s=self.config.log_cleaner_io_bytes_per_s)

    # ---- logs ----------------------------------------------------------------------------------

    def _open(self, record: PartitionRecord) -> Partition:
        existing = self.partitions.get(record.key)
        if existing is not None and existing.topic_id == record.topic_id:
            return existing
        if existing is not None:  # a re-created topic: the old replica goes
            self._remove(existing, delete=True)
        name = f"{record.topic}-{record.partition}"
        topic_log = open_partition_log(
            self.config.data_dir,
            record,
            log_config(
                self.topic_lookup(record.topic),
                segment_bytes=self.config.segment_bytes,
                flush_messages=self.config.flush_messages,
                flush_ms=self.config.flush_ms,
            ),
            clock=self.clock,
            state=self.state,
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
        partition.damaged = True
        self.damaged.add(partition.key)
        if partition.stop_leading():
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
        return checked

    def _remove(self, partition: Partition, *, delete: bool) -> None:
        self.partitions.pop(partition.key, None)
        self.cleaner.abandon(partition.key)
        partition.leader = None
        self._wake(partition.key)
        remove_partition_files(partition, self.config.data_dir, self.state, delete=delete)

    def delete_strays(self, records: Mapping[TopicPartition, PartitionRecord]) -> int:
        """Delete the logs on disk of partitions the metadata moved off this broker while it
        was down (``stray_directories``); how many. Call with caught-up metadata only."""
        deleted = 0
        for key, directory in stray_directories(
            self.config.data_dir, self.config.broker_id, records
        ):
            if key in self.partitions:
                continue  # open: the listener's STOP_REPLICA removes it
            logger.warning("%s-%s: not a replica any more: its stray log is deleted", *key)
            shutil.rmtree(directory, ignore_errors=True)
            self.state.delete_partition(f"{key[0]}-{key[1]}")
            deleted += 1
        return deleted

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
            # produces answer NOT_LEADER_OR_FOLLOWER, fetches return; the HW is checkpointed
            self.partitions[key].stop_leading()
            self._wake(key)

    def close(self) -> None:
        self.cleaner.close()  # its thread reads the logs' files: stopped before they close
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
                        partition.stop_leading()
                        self._wake(record.key)
                        continue
                    partition.become_leader(
                        self.config.broker_id,
                        record,
                        now,
                        replica_lag_ms_max=self.config.replica_lag_ms_max,
                        min_insync_replicas=self._min_isr(record.topic),
                        replica_silence_ms_max=self.config.replica_silence_ms_max,
                    )
                    self.follower_changed(partition)
                    self._wake(record.key)
                case EventKind.LEADER_UPDATE:
                    assert record is not None
                    partition = self._open(record)
                    partition.record = record
                    if partition.leader is not None:
                        # a reassignment adds and removes followers within our epoch
                        partition.leader.update_replicas(record.replicas, now)
                        self._update_isr(partition.leader, record.isr, record.partition_epoch)
                        partition.leader.min_insync_replicas = self._min_isr(record.topic)
                        partition.leader.update_high_watermark(partition.log.log_end_offset)
                    self._wake(record.key)
                case EventKind.BECOME_FOLLOWER | EventKind.FOLLOWER_UPDATE:
                    assert record is not None
                    partition = self._open(record)
                    was_leader = partition.stop_leading()
                    partition.record = record
                    if event.kind is EventKind.BECOME_FOLLOWER or was_leader:
                        self.follower_changed(partition)
                        self._wake(record.key)
                case EventKind.STOP_REPLICA | EventKind.DELETE_REPLICA:
                    # a topic deleted, or a replica moved off this broker by a reassignment
                    # (which completes only with every target replica in the ISR): the log goes,
                    # as in Kafka (a reassignment back here fetches it again)
                    found = self.partitions.get(event.key)
                    if found is not None:
                        self._remove(found, delete=True)
                        self.follower_changed(found)

    def _min_isr(self, topic: str) -> int:
        record = self.topic_lookup(topic)
        return record.min_insync_replicas if record else 1

    def _compacted(self, topic: str) -> bool:
        """The topic's cleanup.policy has compact now (its configs, not the log's, which
        ``refresh_log_config`` updates only periodically)."""
        record = self.topic_lookup(topic)
        policy = dict(record.configs).get("cleanup.policy", "delete") if record else "delete"
        return "compact" in (cleanup_policy(policy) or ())

    def refresh_log_config(self, partition: Partition) -> None:
        """Apply the topic's current configs to its open log (altered since it opened)."""
        try:
            config = log_config(
                self.topic_lookup(partition.key[0]),
                segment_bytes=self.config.segment_bytes,
                flush_messages=self.config.flush_messages,
                flush_ms=self.config.flush_ms,
            )
        except StorageError as exc:  # the configs were validated; a broker default may not be
            logger.error("%s: topic configs not applied: %s", partition.name, exc)
            return
        if config != partition.log.config:
            partition.log.config = config

    def _wake(self, key: TopicPartition) -> None:
        now = self.clock.mono_ms()
        self.produce_purgatory.check_and_complete(key, now)
        self.fetch_purgatory.check_and_complete(key, now)

    # ---- produce ---------------------------------------------------------------------------------

    def append(
        self, topic: str, index: int, records: bytes, acks: int
    ) -> tuple[ProduceOutcome, Partition | None, int]:
        """Validate and append one partition's batches as leader; (outcome, partition, min ISR)."""
        partition = self.partitions.get((topic, index))
        refused = produce_target_error(
            self.ready, topic, index, partition, self.topic_lookup, self.cut_off
        )
        if refused is not None:
            return ProduceOutcome(topic, index, *refused), None, 0
        assert partition is not None and partition.leader is not None  # the rule checked
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
            compacted=self._compacted(topic),
        )
        match decision:
            case Refuse(code, message):
                if code == ErrorCode.NOT_ENOUGH_REPLICAS:
                    message = f"{partition.name}: {message}"
                return ProduceOutcome(topic, index, code, message), None, 0
            case Duplicate(stored):
                duplicate = ProduceOutcome(
                    topic,
                    index,
                    ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
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
                info = partition.append_as_leader(batch, header, epoch)
                first = info if first is None else first
                last = info
        except StorageError as exc:
            return ProduceOutcome(topic, index, exc.code, str(exc)), None, 0
        assert first is not None and last is not None
        self.traffic.produced(topic, sum(h.record_count for h in headers), len(records))
        leader = partition.leader
        if leader.update_high_watermark(log_.log_end_offset):
            self._wake(partition.key)
        else:
            self.fetch_purgatory.check_and_complete(partition.key, self.clock.mono_ms())
        outcome = ProduceOutcome(
            topic,
            index,
            ErrorCode.NONE,
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
        invalid = acks_error(acks)
        if invalid is not None:
            return [ProduceOutcome(t, p, *invalid) for t, p, _ in items]
        outcomes: list[ProduceOutcome] = []
        waits: list[ProduceWait] = []
        waiting_at: list[int] = []  # each wait's place in ``outcomes`` (a partition may repeat)
        for topic, index, records in items:
            outcome, partition, min_isr = self.append(topic, index, records, acks)
            if acks == -1 and partition is not None and outcome.error in WAITABLE:
                waits.append(ProduceWait(partition, outcome, min_isr))
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
        if not op.completed and self.on_watch is not None:
            self.on_watch()
        for place, result in zip(waiting_at, await op.future, strict=True):
            outcomes[place] = result
        return outcomes

    # ---- fetch -----------------------------------------------------------------------------------

    def check_leader(
        self, spec: FetchSpec, replica_id: int
    ) -> tuple[Partition | None, FetchOutcome]:
        """The partition a fetch (or a ListOffsets, an OffsetForLeaderEpoch) reads, if this
        broker leads it for ``replica_id`` in the epoch the request names; and the answer's
        base (its error when there is no partition to read)."""
        topic, index = spec.topic, spec.partition
        partition = self.partitions.get((topic, index)) if self.ready else None
        refused = fetch_target_error(self.ready, spec, replica_id, partition, self.topic_lookup)
        base = (
            FetchOutcome(topic, index)
            if partition is None
            else FetchOutcome(
                topic, index, leader_id=partition.leader_id, leader_epoch=partition.leader_epoch
            )
        )
        if refused is not None:
            return None, _with(base, *refused)
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
        end = readable_end(replica_id, hw, log_.log_end_offset)
        out_of_range = fetch_offset_error(
            spec.fetch_offset, log_.log_start_offset, log_.log_end_offset, partition.name
        )
        if out_of_range is not None:
            return _with(base, *out_of_range, **common)
        limit = read_bytes_limit(spec.fetch_offset, end, spec.max_bytes, max_bytes)
        if limit is None:
            return _with(base, **common)
        throttle = self._catch_up_limit(partition, replica_id, now)
        if throttle is not None:
            allowed = throttle.allowance(now)
            if allowed <= 0:
                return _with(base, **common)
            limit = min(limit, allowed)
        try:
            result = log_.read(spec.fetch_offset, limit, max_offset=end)
            if throttle is not None:
                throttle.spend(len(result.data))
        except CorruptRecordError as exc:
            # our copy is damaged: an intact replica must serve this (rule 7); clients retry
            # after refreshing metadata, followers back off until the new leader is known
            self.on_damage(partition, getattr(exc, "offset", None), str(exc))
            return _with(base, ErrorCode.KAFKA_STORAGE_ERROR, f"{partition.name}: {exc}", **common)
        except StorageError as exc:
            return _with(base, exc.code, str(exc), **common)
        return _with(base, records=result.data, **common)

    @staticmethod
    def _catch_up_limit(
        partition: Partition, replica_id: int, now_ms: MonoMs
    ) -> ByteRateLimit | None:
        """The throttle of a replica being added by a reassignment (throttle.py); None when it
        is not one, or the reassignment set no throttle."""
        record = partition.record
        limits = partition.catch_up_limits
        if record is None or not record.throttle or replica_id not in record.adding:
            if limits and (record is None or not record.adding):
                limits.clear()  # the move is over
            return None
        limit = limits.get(replica_id)
        if limit is None or limit.rate != record.throttle:
            limit = limits[replica_id] = ByteRateLimit.full(record.throttle, now_ms)
        return limit

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
        outcomes = self._read_all(replica_id, specs, max_bytes, replica_incarnation)
        if fetch_answers_now(outcomes, min_bytes, max_wait_ms):
            return self._counted(replica_id, outcomes)
        now = self.clock.mono_ms()
        marks = {}
        for spec in specs:
            partition = self.partitions.get((spec.topic, spec.partition))
            if partition is not None:
                end = readable_end(
                    replica_id, partition.high_watermark, partition.log.log_end_offset
                )
                marks[partition.key] = (end, partition.leader_epoch)
        wait_ms = min(max_wait_ms, self.config.fetch_wait_ms_max)
        op = DelayedFetch(
            now + wait_ms, self.partitions, replica_id, specs, max(min_bytes, 1), marks
        )
        try:
            self.fetch_purgatory.try_complete_else_watch(op, set(marks), now)
        except PurgatoryFullError:
            return self._counted(replica_id, outcomes)
        if not op.completed and self.on_watch is not None:
            self.on_watch()
        await op.future
        outcomes = self._read_all(replica_id, specs, max_bytes, -1, record_progress=False)
        return self._counted(replica_id, outcomes)

    def _counted(self, replica_id: int, outcomes: list[FetchOutcome]) -> list[FetchOutcome]:
        """``outcomes``, after adding what they carry to the traffic counters."""
        if replica_id >= 0:
            self.traffic.replication_bytes_out += sum(len(o.records) for o in outcomes)
        else:
            for outcome in outcomes:
                self.traffic.consumed(outcome.topic, outcome.records)
        return outcomes

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
        self._update_isr(leader, tuple(isr), partition_epoch)
        leader.update_high_watermark(partition.log.log_end_offset)
        self._wake(key)

    def _update_isr(
        self, leader: LeaderReplication, isr: tuple[int, ...], partition_epoch: int
    ) -> None:
        before = leader.isr
        leader.update_from_metadata(isr, partition_epoch)
        if leader.isr != before:
            self.traffic.isr_changed(before, leader.isr)

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

    def next_expiry_ms(self) -> int | None:
        """When ``expire`` next has work (monotonic ms), or None while nothing waits."""
        due = [
            at
            for purgatory in (self.produce_purgatory, self.fetch_purgatory)
            if (at := purgatory.next_expiration_ms()) is not None
        ]
        return min(due, default=None)

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
            self.refresh_log_config(partition)  # retention.ms and cleanup.policy follow alters
            try:
                # a leader keeps what is not yet committed; a follower follows the leader's start
                deleted += partition.log.delete_retained(now, max_offset=partition.high_watermark)
            except StorageError as exc:
                logger.error("%s: retention: %s", partition.name, exc)
        return deleted

    async def clean_logs(self) -> int:
        """Periodic: one round of the log cleaner (``log_cleaner.py``); segments swapped in."""
        for partition in self.partitions.values():
            self.refresh_log_config(partition)  # a topic altered to compact starts here
        return await self.cleaner.clean_round(self.partitions)

    # ---- producer state ----------------------------------------------------------------------

    def _rebuild_producers(self, partition: Partition) -> None:
        partition.producers = rebuild_producers(partition.log, self.state, partition.name)

    def snapshot_producers(self) -> int:
        """Write the producer state of every partition that changed; how many were written."""
        return snapshot_producers(self.partitions.values(), self.state)

    def expire_producers(self) -> int:
        now = self.clock.wall_ms()  # compared with batch timestamps
        return sum(
            p.producers.expire(now, self.config.producer_idle_ms_max)
            for p in self.partitions.values()
        )

    def truncate(self, partition: Partition, offset: int) -> None:
        log_ = partition.log
        # A producer snapshot above the cut describes batches about to go: once the log grows
        # past it again with other batches, a restart would take it for the truth (and answer a
        # retry of a lost batch as a duplicate). Gone before the cut, so no crash can keep it;
        # the next snapshot round writes the state at the new end.
        drop_producer_snapshot_above(self.state, partition.name, offset)
        if offset < log_.log_start_offset:
            log_.truncate_fully_and_start_at(offset)
        else:
            log_.truncate_to(offset)
        partition.set_follower_hw(0)
        if partition.producers.truncated(log_.log_end_offset):
            self._rebuild_producers(partition)
        partition.producers.dirty = True

    # ---- describing ------------------------------------------------------------------------------

    def leader_end_offset_for(
        self, topic: str, index: int, current_leader_epoch: int, epoch: int
    ) -> tuple[ErrorCode, str, int, int]:
        """OffsetForLeaderEpoch: (error, message, epoch, end offset)."""
        partition, base = self.check_leader(FetchSpec(topic, index, 0, current_leader_epoch), -1)
        if partition is None:
            return base.error, base.message, -1, -1
        found_epoch, end = partition.log.end_offset_for_epoch(epoch)
        return ErrorCode.NONE, "", found_epoch, end


def _with(
    outcome: FetchOutcome, error: ErrorCode = ErrorCode.NONE, message: str = "", **fields: Any
) -> FetchOutcome:
    return replace(outcome, error=error, message=message, **fields)
