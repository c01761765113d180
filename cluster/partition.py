"""One replica on this broker (``Partition``) and its files: the log's directory and its topic
id, the log's configuration from the topic's, opening, closing and deleting.

Owned by the replica manager (``replica_manager.py``), on the broker loop; not thread-safe.

On disk a replica is the directory ``<data_dir>/<topic>-<partition>/``: the log's segments
(``segments/``) and ``partition.metadata``, one line holding the topic id, e.g. ``7\\n``. A
topic deleted and created again under the same name gets a new id: a directory whose id is not
the metadata's is a stranger's log and is removed before the replica opens (so are its high
watermark and producer state in LMDB). The file is written durably with its directory, so a
power loss never leaves a log without its id. Not checksummed; one integer, rewritten whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping

from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord, TopicPartition, TopicRecord
from raftlog.raft.topic_config import cleanup_policy, effective_configs
from raftlog.segments import (
    AppendInfo,
    BatchHeader,
    BrokerStateStore,
    Log,
    LogConfig,
    StorageError,
    iter_batches,
    makedirs_durable,
    write_file_durable,
)
from raftlog.segments.cleaner import CompactionPolicy
from raftlog.segments.clock import Clock, MonoMs

from .producer_state import ProducerStateManager
from .replication import LeaderReplication
from .throttle import ByteRateLimit

__all__ = [
    "PARTITION_META",
    "Partition",
    "log_config",
    "open_partition_log",
    "partition_directory",
    "remove_partition_files",
]

logger = logging.getLogger(__name__)

PARTITION_META = "partition.metadata"  # holds the topic id: a re-created topic is a new log


class Partition:
    """One replica on this broker: its log, its producer state and, while it leads, its
    replication state (Kafka's ``Partition``). Owned by the replica manager, on the broker loop."""

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
        # a reassignment's throttle per replica being added (throttle.py)
        self.catch_up_limits: dict[int, ByteRateLimit] = {}
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

    # ---- roles ---------------------------------------------------------------------------------

    def become_leader(
        self,
        broker_id: int,
        record: PartitionRecord,
        now_ms: MonoMs,
        *,
        replica_lag_ms_max: int,
        min_insync_replicas: int,
        replica_silence_ms_max: int | None,
    ) -> None:
        """Lead ``record``'s leader epoch from our log end, from the HW we knew."""
        log_end = self.log.log_end_offset
        self.leader = LeaderReplication.start(
            broker_id,
            record.replicas,
            record.isr,
            record.leader_epoch,
            record.partition_epoch,
            log_end,
            self.high_watermark,
            replica_lag_ms_max,
            now_ms,
            min_insync_replicas,
            replica_silence_ms_max,
        )
        self.leader.update_high_watermark(log_end)

    def stop_leading(self) -> bool:
        """Lead no more (a follower now, damaged, or shutting down); True if we led. The HW we
        reached stays ours as a follower's (and is checkpointed)."""
        leader = self.leader
        if leader is None:
            return False
        self._follower_hw = min(leader.high_watermark, self.log.log_end_offset)
        self.leader = None
        return True

    # ---- appends -------------------------------------------------------------------------------

    def append_as_leader(
        self, batch: memoryview, header: BatchHeader, leader_epoch: int
    ) -> AppendInfo:
        """Append one batch (validated: ``produce.produce_decision``) as the leader of
        ``leader_epoch``; raises StorageError."""
        info = self.log.append(batch, leader_epoch=leader_epoch, header=header)
        if header.producer_id >= 0:
            # the batch's own time, as the rebuild from the log uses: every replica then
            # expires the same producers (a new leader must dedupe like the old)
            self.producers.record_batch(header, info.base_offset, info.last_offset)
        return info

    def append_as_follower(self, records: bytes, leader_hw: int) -> int:
        """Append fetched batches (offsets and epochs kept) and follow the leader's HW; return
        bytes appended. Raises StorageError."""
        if records:
            infos = self.log.append_as_follower(records)
            for (_, header), info in zip(
                iter_batches(records, verify_crc=False), infos, strict=True
            ):
                if header.producer_id >= 0:
                    self.producers.record_batch(header, info.base_offset, info.last_offset)
        self.set_follower_hw(leader_hw)
        return len(records)


def log_config(
    topic: TopicRecord | None, *, segment_bytes: int, flush_messages: int, flush_ms: int
) -> LogConfig:
    """A topic's log configuration: its explicit configs over the broker's defaults (the three
    given; -1 for none) over the cluster's (``topic_config``)."""
    explicit = dict(topic.configs) if topic else {}
    merged = effective_configs(explicit.items())

    def value(name: str, broker_default: int) -> int:
        return int(explicit[name]) if name in explicit else broker_default

    retention_ms = int(merged["retention.ms"])
    retention_bytes = int(merged["retention.bytes"])
    flush_messages = value("flush.messages", flush_messages)
    flush_ms = value("flush.ms", flush_ms)
    policy = cleanup_policy(merged["cleanup.policy"]) or frozenset({"delete"})
    return LogConfig(
        segment_bytes=value("segment.bytes", segment_bytes),
        segment_ms=int(merged["segment.ms"]),
        max_message_bytes=int(merged["max.message.bytes"]),
        retention_ms=None if retention_ms < 0 else retention_ms,
        retention_bytes=None if retention_bytes < 0 else retention_bytes,
        flush_messages=None if flush_messages < 0 else flush_messages,
        flush_ms=None if flush_ms < 0 else flush_ms,
        cleanup_delete="delete" in policy,
        cleanup_compact="compact" in policy,
        compaction=CompactionPolicy(
            delete_retention_ms=int(merged["delete.retention.ms"]),
            min_cleanable_dirty_ratio=float(merged["min.cleanable.dirty.ratio"]),
            min_compaction_lag_ms=int(merged["min.compaction.lag.ms"]),
        ),
    )


def partition_directory(data_dir: str, key: TopicPartition) -> str:
    return os.path.join(data_dir, f"{key[0]}-{key[1]}")


def stray_directories(
    data_dir: str, broker_id: int, records: Mapping[TopicPartition, PartitionRecord]
) -> list[tuple[TopicPartition, str]]:
    """The partition directories under ``data_dir`` that the committed metadata (``records``)
    no longer assigns to ``broker_id``: a reassignment moved the replica away while this broker
    was down, so it never heard it leave (KIP-858's stray replicas). A directory of a partition
    the metadata does not hold is not listed (only a committed DeleteTopic deletes a log)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(data_dir)):
            topic, sep, index = entry.rpartition("-")
            if not sep or not index.isdigit():
                continue
            key = (topic, int(index))
            record = records.get(key)
            if record is not None and broker_id not in record.replicas:
                out.append((key, os.path.join(data_dir, entry)))
    return out


def open_partition_log(
    data_dir: str,
    record: PartitionRecord,
    config: LogConfig,
    *,
    clock: Clock,
    state: BrokerStateStore,
    background: Callable[[Callable[[], None]], None] | None,
) -> Log:
    """Open (or create) the log of ``record``'s replica; a stranger's log found in its place (a
    topic id other than the record's) is removed first, with its state in LMDB."""
    directory = partition_directory(data_dir, record.key)
    name = f"{record.topic}-{record.partition}"
    meta = os.path.join(directory, PARTITION_META)
    if os.path.isdir(directory):
        try:
            with open(meta) as f:
                on_disk = int(f.read().strip() or -1)
        except (OSError, ValueError):
            on_disk = -1
        if on_disk != record.topic_id:
            logger.warning("%s: stale log of topic id %s removed", name, on_disk)
            shutil.rmtree(directory)
            state.delete_partition(name)
    else:
        on_disk = -1
    if on_disk != record.topic_id:
        # the directory and its topic id must survive a power loss (names need their
        # parent directory fsynced), or a reboot would find a stranger's log
        makedirs_durable(directory)
        write_file_durable(meta, f"{record.topic_id}\n".encode())
    return Log(directory, config, clock=clock, state=state, name=name, background=background)


def remove_partition_files(
    partition: Partition, data_dir: str, state: BrokerStateStore, *, delete: bool
) -> None:
    """Close the replica's log, or (``delete``) delete it with its directory and LMDB state."""
    directory = partition_directory(data_dir, partition.key)
    try:
        if delete:
            # the topic-id file first: the log removes its own files, then its directory
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, PARTITION_META))
            try:
                partition.log.delete()
            finally:
                with contextlib.suppress(OSError):
                    shutil.rmtree(directory)
                state.delete_partition(partition.name)
        else:
            partition.log.close()
    except StorageError as exc:
        logger.error("%s: %s", partition.name, exc)
