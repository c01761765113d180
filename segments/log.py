"""The log of one partition replica: ordered segments, appends, reads, truncation, retention.

Owned by the broker's replica of one partition; not thread-safe: the replica manager holds the
partition lock around every call. Time is wall time (``WallMs``, ``segments/clock.py``): rolling
by ``segment_ms``, ``flush_ms`` and retention compare it with record timestamps. It comes from the
``Clock`` the log is given, or as ``now_ms`` in a call, so all three are deterministic under test.
A segment's age for ``segment_ms`` starts at its creation, or — for the active segment of a
reopened log — at its first batch's timestamp (Kafka's rolling base), so a restart does not
restart the clock. ``flush_ms`` is checked on append and by ``maybe_flush``, which the broker calls
periodically (an idle partition's unsynced tail is still bounded in time).

Directory ``<topic>-<partition>/`` holds ``<base_offset:020d>.log`` segments and their indexes
(see ``segment.py`` and ``index.py``). Offsets are dense: the log end offset (LEO) is one past the
last stored offset and every append starts exactly there. Only the last segment is written; a
segment is rolled when the next batch would take it past ``segment_bytes``, when it is older than
``segment_ms``, or when relative offsets would overflow 32 bits.

Durability (the flush policy): by default the log fsyncs on segment roll and on close, never per
append. An acknowledged record is then durable because it is on ``min.insync.replicas`` brokers'
page caches — it survives any process crash (kill -9) but not a simultaneous power loss of all
those machines. Set ``flush_messages=1`` to fsync every append (every batch acknowledged is on
disk, at the price of one fsync per batch), or ``flush_ms`` to bound the window.

The recovery point: ``recovery_point`` is an offset below which every byte is known fsynced,
the file data and the directory entries of its segments; ``recovery_point.py`` says when it
moves (``flush`` moves it to the log end offset, so ``close`` leaves it there) and it is
persisted in the broker's state store. Opening checks what it does not cover and truncates at
the first damage (``loader.py``); ``recovery`` reports what opening cut and whether that was more
than a torn tail (damage: the replica may have lost acknowledged data). ``scrub`` finds latent
damage below the recovery point a bounded number of bytes at a time; ``verify`` checks
everything at once (``scrub.py``).
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .batch import BatchHeader, iter_batches, stamped_prefix, validate_batch
from .cleaner import CleanPlan, CompactionPolicy, SegmentSpan, plan_clean
from .clock import Clock, WallMs
from .compaction import (
    CleanJob,
    JobResult,
    RateLimiter,
    SourceSegment,
    discard_cleaned,
    finish_interrupted,
    swap_log,
)
from .durable import fsync_directory
from .epochs import LeaderEpochCache
from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOffsetMismatchError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageIOError,
)
from .loader import load_epoch_cache, load_segments
from .reader import iter_headers_from, read_batches
from .recovery import RecoveryReport, ScrubResult
from .recovery_point import RecoveryPoint
from .scrub import Scrubber, verify_segments
from .segment import Segment, WriteV
from .state import BrokerStateStore

__all__ = ["AppendInfo", "Log", "LogConfig", "ReadResult", "RecoveryReport", "ScrubResult"]

_RELATIVE_OFFSET_MAX = 0xFFFFFFFF
_DEFAULT_COMPACTION = CompactionPolicy()
_SEGMENT_BYTES_MAX = 0x7FFFFFFF  # positions in the index are uint32; stay well inside


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Per-topic storage settings; names follow Kafka's topic configs."""

    segment_bytes: int = 1 << 30  # segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000  # segment.ms
    index_interval_bytes: int = 4096  # index.interval.bytes
    max_message_bytes: int = (1 << 20) + 12  # max.message.bytes: the largest batch accepted
    flush_messages: int | None = None  # flush.messages: fsync after this many records
    flush_ms: int | None = None  # flush.ms: fsync when the last fsync is older than this
    retention_ms: int | None = 7 * 24 * 3600 * 1000  # retention.ms; None keeps forever
    retention_bytes: int | None = None  # retention.bytes; None means no size limit
    loaded_indexes_max: int = 16  # closed segments whose indexes stay in memory
    # cleanup.policy: delete (retention deletes old segments), compact (the cleaner keeps the
    # latest record per key: ``cleaner.py``), or both
    cleanup_delete: bool = True
    cleanup_compact: bool = False
    compaction: CompactionPolicy = _DEFAULT_COMPACTION

    def __post_init__(self) -> None:
        if not 1024 <= self.segment_bytes <= _SEGMENT_BYTES_MAX:
            raise InvalidRecordError(f"segment_bytes must be in [1024, {_SEGMENT_BYTES_MAX}]")
        if self.index_interval_bytes < 0 or self.max_message_bytes < 64:
            raise InvalidRecordError("index_interval_bytes and max_message_bytes are too small")


class AppendInfo(NamedTuple):  # a tuple: one per appended batch, built at half a dataclass's cost
    base_offset: int
    last_offset: int
    record_count: int
    position: int  # byte position of the batch in its segment


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: bytes  # whole batches, back to back; empty when there is nothing to return
    next_offset: int  # offset after the last batch returned (== the asked offset when empty)
    log_start_offset: int
    log_end_offset: int


class Log:
    """All segments of one partition replica.

    Owned by the replica manager (one partition lock around every call); not thread-safe, with
    one exception: a rolled segment's background fsync reports its completion from another
    thread, and the ``RecoveryPoint`` (``recovery_point.py``) guards exactly what that touches.
    """

    def __init__(
        self,
        directory: str,
        config: LogConfig | None = None,
        *,
        clock: Clock,
        now_ms: WallMs | None = None,
        state: BrokerStateStore | None = None,
        name: str | None = None,
        log_start_offset: int | None = None,
        writev: WriteV = os.writev,
        background: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.directory = directory
        self.config = config or LogConfig()
        self.name = name or os.path.basename(os.path.normpath(directory))
        self._state = state
        self._writev = writev
        # runs the fsync of a rolled segment off the caller's thread (the broker's loop must not
        # stall on seconds of writeback); None: fsync inline, as the tools and tests do
        self._background = background
        # every "now" of this log is wall time (it is compared with record timestamps: retention,
        # segment.ms, flush.ms), from this clock unless a call passes its own
        self._clock = clock
        now = clock.wall_ms() if now_ms is None else now_ms
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageIOError(f"cannot create {directory}: {exc}") from exc
        self._segments: list[Segment] = []  # sorted by base_offset; the last one is active
        self._bases: list[int] = []  # the segments' base offsets, for bisect
        self._loaded: OrderedDict[int, Segment] = OrderedDict()  # closed segments, LRU
        self._unflushed_records = 0
        self._last_flush_ms = now
        # bumped by whatever rewrites the log's tail or empties it (truncation, delete, close):
        # a cleaning job begun before it no longer describes the log (``finish_clean``)
        self._layout_version = 0
        # 0 <= recovery point <= LEO; also what is known of the directory's fsyncs
        self._durability = RecoveryPoint(directory, self._persist_recovery_point)
        self._scrubber = Scrubber()
        saved_epochs = state.load_epochs(self.name) if state is not None else None
        saved_point = state.get_offset("recovery_point", self.name) if state is not None else None
        try:  # a clean a crash interrupted: finished or discarded before anything reads a file
            self.cleaning_recovered = finish_interrupted(directory)
        except OSError as exc:
            raise StorageIOError(
                f"cannot finish an interrupted clean in {directory}: {exc}"
            ) from exc
        loaded = load_segments(
            directory,
            lambda base: self._new_segment(base, now),
            self._durability,
            saved_point,
            saved_epochs,
        )
        for segment in loaded.segments:
            self._add_segment(segment)
        self._durability.start_at(loaded.recovery_point, persist=loaded.point_changed)
        self.recovery: RecoveryReport = loaded.recovery  # what the open found and cut
        self.recovered_bytes_truncated = self.recovery.truncated_bytes
        last = self._segments[-1]
        self._next_offset = last.next_offset  # the LEO; 0 <= log_start_offset <= LEO
        first_base = self._segments[0].base_offset
        checkpoint = log_start_offset
        if checkpoint is None and state is not None:
            checkpoint = state.get_offset("log_start", self.name)
        self._log_start_offset = max(first_base, min(checkpoint or 0, self._next_offset))
        self.epochs, changed = load_epoch_cache(
            saved_epochs, loaded, self._log_start_offset, self._next_offset
        )
        # where the cleaner's dirty section starts; 0 (all dirty) when unknown, which is safe
        saved_dirty = state.get_offset("cleaner", self.name) if state is not None else None
        self._cleaner_checkpoint = min(saved_dirty or 0, self._next_offset)
        # the earliest delete horizon the last pass kept: a pass is due then (not persisted: a
        # restart waits for the dirty ratio, as Kafka's latestDeleteHorizon does)
        self._delete_horizon_ms: int | None = None
        if changed:
            self._save_epochs(self.epochs)
        if last.size_bytes:  # a reopened active segment is as old as its first batch
            with contextlib.suppress(Exception):  # unreadable: its age starts now, as before
                first = last.header_at(0).max_timestamp
                if 0 <= first <= now:
                    last.created_ms = first

    def _new_segment(self, base_offset: int, now_ms: WallMs) -> Segment:
        return Segment(
            self.directory,
            base_offset,
            index_interval_bytes=self.config.index_interval_bytes,
            created_ms=now_ms,
            writev=self._writev,
        )

    def _add_segment(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._bases.append(segment.base_offset)

    def _save_epochs(self, cache: LeaderEpochCache) -> None:
        if self._state is not None:
            self._state.save_epochs(self.name, cache.entries)

    def _persist_recovery_point(self, offset: int) -> None:
        if self._state is not None:
            self._state.save_offsets("recovery_point", {self.name: offset})

    # ---- facts ---------------------------------------------------------------------------------

    @property
    def log_end_offset(self) -> int:
        return self._next_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segment_base_offsets(self) -> list[int]:
        return list(self._bases)

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    @property
    def recovery_point(self) -> int:
        """Every byte below this offset is fsynced, data and directory entries (<= the LEO)."""
        return self._durability.value

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (greatest epoch <= ``epoch``, where it ends in this log)."""
        return self.epochs.end_offset_for(epoch, self._next_offset)

    # ---- appending -----------------------------------------------------------------------------

    def append(
        self,
        batch: bytes | bytearray | memoryview,
        *,
        leader_epoch: int,
        now_ms: WallMs | None = None,
        header: BatchHeader | None = None,
    ) -> AppendInfo:
        """Leader append: validate, assign offsets from the LEO, stamp ``leader_epoch``.

        ``header``: the caller already ran ``validate_batch`` on exactly these bytes with this
        log's ``max_message_bytes`` (the broker checks a whole request before appending any of
        it), so the CRC is not computed twice.
        """
        view = memoryview(batch)
        if header is None:
            header = validate_batch(view, self.config.max_message_bytes)
        if leader_epoch < self.epochs.latest_epoch:
            raise InvalidRecordError(
                f"append in epoch {leader_epoch}, but the log has epoch {self.epochs.latest_epoch}"
            )
        return self._append(view, header, self._next_offset, leader_epoch, now_ms)

    def append_as_follower(
        self, data: bytes | bytearray | memoryview, *, now_ms: WallMs | None = None
    ) -> list[AppendInfo]:
        """Follower append of whole batches fetched from the leader, offsets and epochs kept.

        Every batch is checked (CRC, contiguous offsets from the LEO) before any is written, so a
        bad fetch response changes nothing.
        """
        view = memoryview(data)
        batches: list[tuple[int, BatchHeader]] = []
        expected = self._next_offset
        consumed = 0
        epoch = self.epochs.latest_epoch
        for position, header in iter_batches(view):
            if header.base_offset != expected:
                raise LogOffsetMismatchError(
                    f"follower append at offset {header.base_offset}, log end offset is {expected}"
                )
            if header.leader_epoch < epoch:
                raise InvalidRecordError(
                    f"batch at {header.base_offset} has epoch {header.leader_epoch} below {epoch}"
                )
            epoch = header.leader_epoch
            batches.append((position, header))
            expected = header.next_offset
            consumed = position + header.size_bytes
        if consumed != len(view):
            raise CorruptRecordError(f"{len(view) - consumed} bytes of a partial batch at the end")
        return [
            self._append(view[p : p + h.size_bytes], h, h.base_offset, h.leader_epoch, now_ms)
            for p, h in batches
        ]

    def _append(
        self,
        view: memoryview,
        header: BatchHeader,
        base_offset: int,
        leader_epoch: int,
        now_ms: WallMs | None,
    ) -> AppendInfo:
        size = header.batch_length + 12
        if size > self.config.segment_bytes:
            raise MessageTooLargeError(
                f"batch of {size} bytes is larger than segment.bytes={self.config.segment_bytes}"
            )
        now = self._clock.wall_ms() if now_ms is None else now_ms
        segment = self._segments[-1]
        if segment.size_bytes and (
            segment.size_bytes + size > self.config.segment_bytes
            or now - segment.created_ms >= self.config.segment_ms
            or base_offset + header.last_offset_delta - segment.base_offset > _RELATIVE_OFFSET_MAX
        ):
            segment = self._roll(base_offset, now)
        position = segment.append(
            stamped_prefix(view, base_offset, leader_epoch), view, header, base_offset
        )
        self._next_offset = base_offset + header.last_offset_delta + 1
        if leader_epoch != self.epochs.latest_epoch and self.epochs.assign(
            leader_epoch, base_offset
        ):
            self._save_epochs(self.epochs)
        self._unflushed_records += header.record_count
        policy = self.config
        if (
            policy.flush_messages is not None and self._unflushed_records >= policy.flush_messages
        ) or (policy.flush_ms is not None and now - self._last_flush_ms >= policy.flush_ms):
            self.flush(now_ms=now)
        return AppendInfo(
            base_offset, base_offset + header.last_offset_delta, header.record_count, position
        )

    def roll(self, now_ms: WallMs | None = None) -> None:
        """Start a new segment at the LEO (no-op if the active segment is empty)."""
        if self._segments[-1].size_bytes:
            self._roll(self._next_offset, self._clock.wall_ms() if now_ms is None else now_ms)

    def _roll(self, base_offset: int, now_ms: WallMs) -> Segment:
        old = self._segments[-1]
        old.time_index.maybe_append(old.max_timestamp_ms, old.next_offset - 1 - old.base_offset)
        if self._background is None:
            old.flush()  # fsync on roll: every closed segment is durable
        segment = self._new_segment(base_offset, now_ms)
        self._durability.directory_changed()
        self._add_segment(segment)
        if self._background is None:
            self._durability.sync_directory()
            self._durability.advance(old.next_offset)
        else:
            # the fsync runs later on another thread; the recovery point waits for it
            self._background(self._durability.fsync_later(old))
        old.index.unload()
        old.time_index.unload()
        return segment

    # ---- reading -------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes``.

        Returns at least one batch when any is readable, even one larger than ``max_bytes`` (so a
        consumer always makes progress), and never a batch reaching ``max_offset`` or beyond (the
        high watermark, for consumers). The first batch may start before ``offset``; the client
        skips those records. Every returned batch passed its CRC check.
        """
        end = self._next_offset if max_offset is None else min(max_offset, self._next_offset)
        if offset < self._log_start_offset or offset > self._next_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self._log_start_offset}, {self._next_offset}] "
                f"of {self.name}"
            )
        empty = ReadResult(b"", offset, self._log_start_offset, self._next_offset)
        if offset >= end:
            return empty
        data, next_offset = read_batches(
            self._segments,
            self._bases,
            offset,
            max_bytes,
            end,
            epoch_for=self.epochs.epoch_for_offset,
            log_start_offset=self._log_start_offset,
            name=self.name,
            touch=self._touch,
        )
        return ReadResult(data, next_offset, self._log_start_offset, self._next_offset)

    def _touch(self, segment: Segment) -> None:
        """Keep closed segments' indexes loaded for at most ``loaded_indexes_max`` segments."""
        if segment is self._segments[-1]:
            return
        self._loaded[segment.base_offset] = segment
        self._loaded.move_to_end(segment.base_offset)
        while len(self._loaded) > self.config.loaded_indexes_max:
            _, old = self._loaded.popitem(last=False)
            old.index.unload()
            old.time_index.unload()

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, max_timestamp) of the first batch with max_timestamp >= ``timestamp_ms``."""
        for segment in self._segments:
            if segment.max_timestamp_ms < timestamp_ms:
                continue
            found = segment.find_timestamp(timestamp_ms)
            self._touch(segment)
            if found is not None:
                _, header = found
                return max(header.base_offset, self._log_start_offset), header.max_timestamp
        return None

    def iter_headers(self, start_offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches holding ``start_offset`` and after, in order (no CRC checks:
        for rebuilding state such as producer ids; reads of the data check CRCs themselves).

        Offsets must run on from batch to batch and segment to segment: a bad header or a gap
        raises CorruptRecordError with ``offset`` where the headers stop making sense."""
        if start_offset >= self._next_offset:
            return
        yield from iter_headers_from(
            self._segments,
            self._bases,
            max(start_offset, self._log_start_offset),
            name=self.name,
        )

    # ---- checking: scrub and verify ----------------------------------------------------------

    def scrub(self, max_bytes: int) -> ScrubResult:
        """Check closed segments a little at a time, from where the previous call stopped
        (``Scrubber.scrub``, ``scrub.py``): at most ``max_bytes`` (at least one batch header).
        Never changes the log: the caller truncates and refetches."""
        return self._scrubber.scrub(
            self._segments,
            self._bases,
            max_bytes,
            epoch_for=self.epochs.epoch_for_offset,
            log_start_offset=self._log_start_offset,
        )

    def verify(self) -> int | None:
        """Check every batch of every segment now; the first damaged offset, or None."""
        found = self.verify_report()
        return None if found is None else found[0]

    def verify_report(self) -> tuple[int, str] | None:
        """Like ``verify``, with the reason: (first damaged offset, why) or None."""
        return verify_segments(
            self._segments,
            self._next_offset,
            epoch_for=self.epochs.epoch_for_offset,
            log_start_offset=self._log_start_offset,
        )

    # ---- truncation and retention ---------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Follower truncation: drop every batch that reaches ``offset``; return the new LEO.

        Batches are not split, so the new LEO may be below ``offset`` when it falls inside one.
        """
        if offset >= self._next_offset:
            return self._next_offset
        if offset < self._log_start_offset:
            raise OffsetOutOfRangeError(
                f"cannot truncate {self.name} to {offset}, below its start {self._log_start_offset}"
            )
        self._layout_version += 1
        # the new end is at or above the base of the segment that will hold it
        holder = self._bases[max(bisect_right(self._bases, offset - 1) - 1, 0)]
        self._durability.lower(min(holder, offset))
        deleted = False
        while len(self._segments) > 1 and self._segments[-1].base_offset >= offset:
            self._segments.pop().delete()
            self._loaded.pop(self._bases.pop(), None)
            self._durability.directory_changed()
            deleted = True
        active = self._segments[-1]
        self._loaded.pop(active.base_offset, None)
        self._next_offset = active.truncate_to(offset)
        active.flush()
        if deleted:
            self._durability.sync_directory()
        if self.epochs.truncate_from_end(self._next_offset):
            self._save_epochs(self.epochs)
        if self._cleaner_checkpoint > self._next_offset:
            self._set_cleaner_checkpoint(self._next_offset)
        return self._next_offset

    def truncate_fully_and_start_at(self, offset: int, now_ms: WallMs | None = None) -> None:
        """Drop everything and continue at ``offset`` (a follower behind the leader's start)."""
        now = self._clock.wall_ms() if now_ms is None else now_ms
        self._layout_version += 1
        self._durability.lower(0)  # a crash half way leaves a mixture: check it all
        for segment in self._segments:
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        self._loaded.clear()
        self._add_segment(self._new_segment(offset, now))
        self._durability.directory_changed()
        self._durability.sync_directory()
        self._next_offset = offset
        self._set_log_start(offset)
        self._durability.restart_at(offset)  # nothing lies below it, the directory is synced
        self.epochs.clear()
        self._save_epochs(self.epochs)
        self._set_cleaner_checkpoint(offset)

    def advance_log_start(self, offset: int) -> int:
        """Move the log start forward (DeleteRecords); whole segments below it are deleted."""
        if offset > self._next_offset:
            raise OffsetOutOfRangeError(f"log start {offset} beyond the end {self._next_offset}")
        if offset > self._log_start_offset:
            self._set_log_start(offset)
            deleted = False
            while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                self._delete_oldest()
                deleted = True
            if deleted:
                self._durability.sync_directory()
        return self._log_start_offset

    def delete_retained(
        self, now_ms: WallMs | None = None, *, max_offset: int | None = None
    ) -> int:
        """Retention: delete whole old segments by time and size; return how many went.

        Never deletes the active segment, nor a segment holding offsets at or above
        ``max_offset`` (the high watermark: a leader keeps what followers may still need).
        Deletes nothing unless ``cleanup.policy`` has ``delete``.
        """
        now = self._clock.wall_ms() if now_ms is None else now_ms
        limit = self._next_offset if max_offset is None else max_offset
        config = self.config
        deleted = 0
        if not config.cleanup_delete:
            return 0  # cleanup.policy=compact: the cleaner alone removes records
        total = self.size_bytes
        while len(self._segments) > 1:
            oldest = self._segments[0]
            if oldest.next_offset > limit:
                break
            expired = (
                config.retention_ms is not None
                and oldest.max_timestamp_ms >= 0
                and now - oldest.max_timestamp_ms > config.retention_ms
            )
            oversize = (
                config.retention_bytes is not None
                and total - oldest.size_bytes >= config.retention_bytes
            )
            if not (expired or oversize):
                break
            total -= oldest.size_bytes
            self._delete_oldest()
            deleted += 1
        if deleted:
            self._durability.sync_directory()
            self._set_log_start(max(self._log_start_offset, self._segments[0].base_offset))
        return deleted

    def _delete_oldest(self) -> None:
        oldest = self._segments.pop(0)
        self._bases.pop(0)
        self._loaded.pop(oldest.base_offset, None)
        oldest.delete()
        self._durability.directory_changed()

    def _set_log_start(self, offset: int) -> None:
        self._log_start_offset = offset
        if self._state is not None:
            self._state.save_offsets("log_start", {self.name: offset})
        if self.epochs.truncate_from_start(offset):
            self._save_epochs(self.epochs)

    # ---- compaction ----------------------------------------------------------------------------

    @property
    def cleaner_checkpoint(self) -> int:
        """Where the dirty section starts: records from here on have not been through a
        cleaner pass's offset map yet (``cleaner.py``)."""
        return self._cleaner_checkpoint

    def _set_cleaner_checkpoint(self, offset: int) -> None:
        self._cleaner_checkpoint = offset
        if self._state is not None:
            self._state.save_offsets("cleaner", {self.name: offset})

    def _closed_spans(self) -> list[SegmentSpan]:
        return [
            SegmentSpan(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp_ms)
            for s in self._segments[:-1]
        ]

    def _plan_clean(self, now_ms: WallMs | None, max_offset: int | None) -> CleanPlan | None:
        if not self.config.cleanup_compact or len(self._segments) < 2:
            return None
        return plan_clean(
            self._closed_spans(),
            first_dirty_offset=max(self._cleaner_checkpoint, self._log_start_offset),
            limit_offset=self._clean_limit(max_offset),
            now_ms=self._clock.wall_ms() if now_ms is None else now_ms,
            policy=self.config.compaction,
            delete_horizon_ms=self._delete_horizon_ms,
        )

    def clean_due(
        self, now_ms: WallMs | None = None, *, max_offset: int | None = None
    ) -> float | None:
        """The dirty ratio (dirty bytes / cleanable bytes) when a cleaning pass is due now
        (``cleaner.plan_clean``), else None; the cleaner cleans the dirtiest log first."""
        plan = self._plan_clean(now_ms, max_offset)
        return None if plan is None else plan.dirty_ratio

    def _clean_limit(self, max_offset: int | None) -> int:
        limit = min(self._next_offset, self._durability.value)  # fsynced: a file to rewrite
        return limit if max_offset is None else min(limit, max_offset)

    def begin_clean(
        self,
        now_ms: WallMs | None = None,
        *,
        max_offset: int | None = None,
        retain_batches: frozenset[int] = frozenset(),
        limiter: RateLimiter | None = None,
        keys_max: int = 1 << 20,
    ) -> CleanJob | None:
        """A cleaning pass to run on another thread (``compaction.run_job``), or None when the
        log is not compacted or not dirty enough (``cleaner.plan_clean``). Only closed segments
        below ``max_offset`` (the high watermark) and the recovery point are cleaned.
        ``retain_batches``: base offsets of batches whose headers producer state needs."""
        now = self._clock.wall_ms() if now_ms is None else now_ms
        plan = self._plan_clean(now, max_offset)
        if plan is None:
            return None
        fds: list[int] = []
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            fds.append(dir_fd)
            sources = []
            for span in plan.segments:
                segment = self._segments[bisect_right(self._bases, span.base_offset) - 1]
                fd = segment.dup_fd()
                fds.append(fd)
                sources.append(
                    SourceSegment(span.base_offset, span.next_offset, span.size_bytes, fd)
                )
        except (OSError, StorageIOError) as exc:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise StorageIOError(f"cannot start cleaning {self.name}: {exc}") from exc
        return CleanJob(
            self.directory,
            dir_fd,
            tuple(sources),
            plan.dirty_from,
            now,
            self.config.compaction,
            retain_batches,
            self.config.index_interval_bytes,
            self._layout_version,
            keys_max=keys_max,
            uncompressed_bytes_max=max(64 << 20, self.config.max_message_bytes),
            limiter=limiter,
            merge_bytes_max=self.config.segment_bytes,
        )

    def finish_clean(self, job: CleanJob, result: JobResult) -> int:
        """Swap a finished job's cleaned segments in, oldest first; how many were. A job whose
        log was truncated, emptied or closed since it began is discarded whole; a segment that
        is gone (retention) or changed is skipped. The cleaner checkpoint moves only when every
        segment of the pass is in place (``compaction.py`` says why)."""
        if result.error is not None:
            return 0
        if job.layout_version != self._layout_version or not self._segments:
            job.discard(result)
            return 0
        swapped = 0
        try:
            for cleaned in result.cleaned:
                base = cleaned.base_offset
                i = bisect_right(self._bases, base) - 1
                k = len(cleaned.sources)
                olds = self._segments[i : i + k] if i >= 0 else []
                if (
                    len(olds) != k
                    or i + k > len(self._segments) - 1  # the active segment is never cleaned
                    or any(
                        (o.base_offset, o.next_offset, o.size_bytes) != source
                        for o, source in zip(olds, cleaned.sources, strict=True)
                    )
                ):
                    discard_cleaned(self.directory, base)
                    continue
                for old in olds:
                    old.index.flush()
                    old.time_index.flush()
                swap_log(self.directory, base, cleaned.merged)
                for old in olds:
                    old.detach()
                    self._loaded.pop(old.base_offset, None)
                    self._scrubber.forget(old.base_offset)
                new = self._new_segment(base, WallMs(olds[0].created_ms))
                if not new.load_closed():  # it was checked whole before the swap
                    new.recover(from_offset=None)
                    new.index.unload()
                    new.time_index.unload()
                self._segments[i : i + k] = [new]
                self._bases[i : i + k] = [base]
                swapped += 1
        finally:
            if swapped:
                fsync_directory(self.directory)  # the last swap's index renames
        if result.checkpoint > self._cleaner_checkpoint:
            self._set_cleaner_checkpoint(result.checkpoint)
        self._delete_horizon_ms = result.stats.next_delete_horizon_ms
        return swapped

    # ---- lifecycle -------------------------------------------------------------------------------

    def maybe_flush(self, now_ms: WallMs | None = None) -> bool:
        """``flush`` when ``flush_ms`` has passed since the last one and something is unsynced
        (the broker calls it periodically); True when it flushed."""
        ms = self.config.flush_ms
        now = self._clock.wall_ms() if now_ms is None else now_ms
        if ms is None or not self._unflushed_records or now - self._last_flush_ms < ms:
            return False
        self.flush(now_ms=now)
        return True

    def flush(self, now_ms: WallMs | None = None) -> None:
        """fsync every segment with unflushed writes (normally just the active one), and those
        whose background fsync has not completed, then the directory if it changed; then the
        recovery point is the log end offset."""
        waiting = self._durability.waiting_segments()
        for segment in self._segments:
            if segment.unflushed or id(segment) in waiting:
                segment.flush(force=id(segment) in waiting)
        self._durability.sync_directory()
        self._unflushed_records = 0
        self._last_flush_ms = self._clock.wall_ms() if now_ms is None else now_ms
        self._durability.flushed(self._next_offset)

    def close(self) -> None:
        self._layout_version += 1
        try:
            self.flush()
        finally:
            for segment in self._segments:
                segment.close()
            self._segments.clear()
            self._bases.clear()

    def delete(self) -> None:
        """Remove the log and its directory (topic deleted)."""
        self._layout_version += 1
        for segment in self._segments:
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        with contextlib.suppress(OSError):  # a cleaning job's files (it fails on its own)
            for name in os.listdir(self.directory):
                if name.endswith(".cleaned"):
                    os.unlink(os.path.join(self.directory, name))
        try:
            os.rmdir(self.directory)
        except OSError as exc:
            raise StorageIOError(f"cannot remove {self.directory}: {exc}") from exc

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._segments:
            self.close()
