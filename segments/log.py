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
the file data and the directory entries of its segments (the directory is fsynced after a
segment file is created or deleted). It moves only after the fsyncs it stands for completed —
in ``flush`` (so ``close`` leaves it at the log end offset), and when a rolled segment's
background fsync completes (in roll order: a later roll's fsync finishing first does not move
it) — and is persisted in the broker's state store (``recovery_point``) after that. Opening
checks every batch from the one at the recovery point to the end (CRC, contiguous offsets within
and between segments, epochs that never go down) and truncates at the first damage; segments
wholly below it are opened cheaply, but offsets must still run on from one segment to the next.
``recovery`` reports what opening cut and whether that was more than a torn tail (damage: the
replica may have lost acknowledged data). ``scrub`` finds latent damage below the recovery point
a bounded number of bytes at a time; ``verify`` checks everything at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lmdb

from .batch import HEADER_BYTES, BatchHeader, iter_batches, stamped_prefix, validate_batch
from .clock import Clock, WallMs
from .durable import fsync_directory
from .epochs import UNDEFINED_EPOCH, EpochEntry, LeaderEpochCache
from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOffsetMismatchError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageIOError,
)
from .recovery import CLEAN, BatchCursor, RecoveryReport, ScrubResult, walk_batches
from .segment import Segment, WriteV, segment_file_name
from .state import BrokerStateStore

__all__ = ["AppendInfo", "Log", "LogConfig", "ReadResult", "RecoveryReport", "ScrubResult"]

_SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)$")
_RELATIVE_OFFSET_MAX = 0xFFFFFFFF
_SEGMENT_BYTES_MAX = 0x7FFFFFFF  # positions in the index are uint32; stay well inside


@dataclass(slots=True)
class _PendingSync:
    """A rolled segment whose fsync runs in the background; until it completes (and every
    earlier one has), the recovery point stays below ``next_offset``."""

    segment: Segment
    next_offset: int  # the recovery point this fsync (with the ones before it) allows
    done: bool = False


@dataclass(slots=True)
class _OpenScan:
    """What opening found that the epoch cache needs."""

    epoch_starts: list[tuple[int, int]]  # (epoch, base offset) where epochs rose in the scan
    covered_all: bool  # the scan started at byte 0 of the first segment


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

    def __post_init__(self) -> None:
        if not 1024 <= self.segment_bytes <= _SEGMENT_BYTES_MAX:
            raise InvalidRecordError(f"segment_bytes must be in [1024, {_SEGMENT_BYTES_MAX}]")
        if self.index_interval_bytes < 0 or self.max_message_bytes < 64:
            raise InvalidRecordError("index_interval_bytes and max_message_bytes are too small")


@dataclass(frozen=True, slots=True)
class AppendInfo:
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
    thread, and ``_sync_lock`` guards exactly what that touches (the recovery point, the pending
    fsyncs, the directory-sync mark).
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
        self._sync_lock = threading.Lock()
        self._recovery_point = 0  # 0 <= recovery_point <= LEO; guarded by _sync_lock
        self._pending_syncs: list[_PendingSync] = []  # in roll order; guarded by _sync_lock
        # segment files created or deleted, and how many of those the last directory fsync
        # covered; after a crash nothing is known, so the first flush syncs the directory
        self._dir_changes = 1
        self._dir_synced = 0  # guarded by _sync_lock
        self._parent_synced = False  # the partition directory's own entry in its parent
        self._scrub_base = -1  # segment the scrub continues in (-1: start at the first)
        self._scrub_cursor: BatchCursor | None = None
        self.recovery: RecoveryReport = CLEAN  # what the open found and cut
        saved_epochs = state.load_epochs(self.name) if state is not None else None
        scan = self._open_segments(now, saved_epochs)
        self.recovered_bytes_truncated = self.recovery.truncated_bytes
        last = self._segments[-1]
        self._next_offset = last.next_offset  # the LEO; 0 <= log_start_offset <= LEO
        first_base = self._segments[0].base_offset
        checkpoint = log_start_offset
        if checkpoint is None and state is not None:
            checkpoint = state.get_offset("log_start", self.name)
        self._log_start_offset = max(first_base, min(checkpoint or 0, self._next_offset))
        self.epochs = self._load_epochs(saved_epochs, scan)
        if last.size_bytes:  # a reopened active segment is as old as its first batch
            with contextlib.suppress(Exception):  # unreadable: its age starts now, as before
                first = last.header_at(0).max_timestamp
                if 0 <= first <= now:
                    last.created_ms = first

    # ---- opening -------------------------------------------------------------------------------

    def _open_segments(self, now_ms: WallMs, saved_epochs: list[EpochEntry] | None) -> _OpenScan:
        """Open every segment, check what the recovery point does not cover, cut the damage."""
        names: dict[int, set[str]] = {}
        for entry in os.listdir(self.directory):
            match = _SEGMENT_NAME.match(entry)
            if match:
                names.setdefault(int(match.group(1)), set()).add(match.group(2))
        for base in sorted(names):
            if "log" not in names[base]:  # an index left behind by an interrupted delete
                for suffix in names[base]:
                    os.unlink(os.path.join(self.directory, segment_file_name(base, "." + suffix)))
                continue
            self._add_segment(self._new_segment(base, now_ms))
        if not self._segments:
            self._add_segment(self._new_segment(0, now_ms))
            self._dir_changes += 1
            return _OpenScan([], covered_all=True)
        saved = None
        if self._state is not None:
            saved = self._state.get_offset("recovery_point", self.name)
        point = max(saved or 0, 0)
        segments = self._segments
        count = len(segments)
        truncated = 0
        damage: tuple[int, str] | None = None  # (first bad offset, why)
        torn = ""
        cut_after = count - 1  # segments after this one are deleted
        # 1. segments wholly below the recovery point: durable, opened without reading them all
        k = 0
        while k < count - 1 and segments[k + 1].base_offset <= point:
            segment = segments[k]
            if not segment.load_closed():
                result = segment.recover(from_offset=None)
                segment.index.unload()
                segment.time_index.unload()
                truncated += result.truncated_bytes
                if result.finding is not None:
                    damage = (result.next_offset, f"{segment.path}: {result.finding.reason}")
                    cut_after = k
                    break
            found = self._check_next_base(k)
            if found is not None:
                damage, cut = found
                truncated += cut
                cut_after = k
                break
            k += 1
        # 2. from the segment holding the recovery point to the end: every batch is checked
        epoch_starts: list[tuple[int, int]] = []
        covered_all = k == 0 and point <= segments[0].base_offset
        if damage is None:
            last_epoch = UNDEFINED_EPOCH
            if saved_epochs and point > 0:  # the epochs below the recovery point are durable
                below = min(segments[k].base_offset, point - 1)
                last_epoch = LeaderEpochCache(saved_epochs).epoch_for_offset(below)
            for i in range(k, count):
                segment = segments[i]
                if i > k:
                    found = self._check_next_base(i - 1)
                    if found is not None:
                        damage, cut = found
                        truncated += cut
                        cut_after = i - 1
                        break
                result = segment.recover(
                    from_offset=point if i == k else None,
                    last_epoch=last_epoch,
                    epoch_starts=epoch_starts,
                )
                truncated += result.truncated_bytes
                last_epoch = result.last_epoch
                if result.finding is not None:
                    cut_after = i
                    reason = f"{segment.path}: {result.finding.reason}"
                    if result.torn and i == count - 1 and result.next_offset >= point:
                        torn = f"torn tail cut: {reason}"
                    else:
                        damage = (result.next_offset, reason)
                    break
                if i < count - 1:
                    segment.index.unload()
                    segment.time_index.unload()
        if cut_after < count - 1:
            for segment in segments[cut_after + 1 :]:
                truncated += segment.size_bytes
                segment.delete()
                self._dir_changes += 1
            del segments[cut_after + 1 :]
            del self._bases[cut_after + 1 :]
            # a closed segment is the active one again: its appending state from its index
            segments[-1].recover(from_offset=segments[-1].next_offset)
            self._sync_directory()
        end = segments[-1].next_offset
        if damage is None and end < point:
            damage = (end, f"the log ends at {end}, below its recovery point {point}")
        if damage is not None:
            self.recovery = RecoveryReport(truncated, True, damage[0], damage[1])
        elif truncated:
            self.recovery = RecoveryReport(truncated, False, None, torn or "torn tail cut")
        # the bytes just checked above the old recovery point may still be only in the page
        # cache: the point stays where it was (lower, when the log now ends below it)
        self._recovery_point = min(point, end)
        if saved is not None and self._recovery_point != saved:
            self._persist_recovery_point(self._recovery_point)
        return _OpenScan(epoch_starts, covered_all)

    def _check_next_base(self, i: int) -> tuple[tuple[int, str], int] | None:
        """Offsets run on from segment ``i`` to ``i + 1``; if not, cut ``i`` where they stop.
        Returns ((first bad offset, why), bytes cut from segment ``i``) or None."""
        segment, following = self._segments[i], self._segments[i + 1]
        if segment.next_offset == following.base_offset:
            return None
        if segment.next_offset < following.base_offset:
            reason = (
                f"a gap: {following.path} starts at {following.base_offset}, the segment "
                f"before it ends at {segment.next_offset}"
            )
            return (segment.next_offset, reason), 0
        before = segment.size_bytes
        try:
            segment.truncate_to(following.base_offset)
        except CorruptRecordError:
            segment.recover(from_offset=None)
            segment.truncate_to(following.base_offset)
        reason = (
            f"an overlap: {following.path} starts at {following.base_offset}, inside the "
            f"segment before it (which ran to {segment.next_offset})"
        )
        return (segment.next_offset, reason), before - segment.size_bytes

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

    def _load_epochs(self, saved: list[EpochEntry] | None, scan: _OpenScan) -> LeaderEpochCache:
        if saved is None:
            cache = LeaderEpochCache()
            if scan.covered_all:  # the open already read every header
                for epoch, base_offset in scan.epoch_starts:
                    cache.assign(epoch, base_offset)
                if self._log_start_offset >= self._next_offset:
                    cache.clear()  # every batch lies below the start
            else:
                for header in self._iter_headers():
                    # below the start is gone; an epoch that goes backwards is a corrupt header
                    # (epochs are outside the CRC) and its batch will fail the read-side check
                    if (
                        header.next_offset > self._log_start_offset
                        and header.leader_epoch >= cache.latest_epoch
                    ):
                        cache.assign(header.leader_epoch, header.base_offset)
            changed = True
        else:
            cache = LeaderEpochCache(saved)
            changed = False
            # the scanned tail is the truth above the recovery point: a crash between an append
            # and the cache's save leaves the saved cache one epoch behind the data
            for epoch, base_offset in scan.epoch_starts:
                entries = cache.entries
                if epoch > cache.latest_epoch and (
                    not entries or base_offset >= entries[-1].start_offset
                ):
                    changed |= cache.assign(epoch, base_offset)
        changed |= cache.truncate_from_end(self._next_offset)
        changed |= cache.truncate_from_start(self._log_start_offset)
        if changed:
            self._save_epochs(cache)
        return cache

    def iter_headers(self, start_offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches holding ``start_offset`` and after, in order (no CRC checks:
        for rebuilding state such as producer ids; reads of the data check CRCs themselves).

        Offsets must run on from batch to batch and segment to segment: a bad header or a gap
        raises CorruptRecordError with ``offset`` where the headers stop making sense."""
        if start_offset >= self._next_offset:
            return
        start_offset = max(start_offset, self._log_start_offset)
        i = max(bisect_right(self._bases, start_offset) - 1, 0)
        expected: int | None = None  # the offset the next header must have
        for segment in self._segments[i:]:
            position = 0
            if expected is None:
                found = segment.find_batch(start_offset)
                if found is None:
                    expected = segment.next_offset  # the offset lies after this segment
                    continue
                position, first = found
                if first.base_offset > start_offset:
                    raise CorruptRecordError(
                        f"no batch holds offset {start_offset} in {self.name}: the next one "
                        f"starts at {first.base_offset}",
                        offset=start_offset,
                    )
                expected = first.base_offset
            elif segment.base_offset != expected:
                raise CorruptRecordError(
                    f"{segment.path} starts at {segment.base_offset}, the log before it ends "
                    f"at {expected}",
                    offset=expected,
                )
            while position < segment.size_bytes:
                want = min(8 << 20, segment.size_bytes - position)
                chunk = segment.pread(want, position)
                consumed = 0
                try:
                    for rel, header in iter_batches(chunk, verify_crc=False):
                        if header.base_offset != expected:
                            raise CorruptRecordError(
                                f"batch at byte {position + rel} of {segment.path} claims offset "
                                f"{header.base_offset}, expected {expected}"
                            )
                        yield header
                        expected = header.next_offset
                        consumed = rel + header.size_bytes
                    if consumed == 0:  # one batch larger than the chunk, or a cut file
                        if len(chunk) < want:
                            raise CorruptRecordError(
                                f"{segment.path} ends at byte {position + len(chunk)}, "
                                f"{segment.size_bytes} were written"
                            )
                        header = segment.header_at(position)
                        if header.base_offset != expected:
                            raise CorruptRecordError(
                                f"batch at byte {position} of {segment.path} claims offset "
                                f"{header.base_offset}, expected {expected}"
                            )
                        if position + header.size_bytes > segment.size_bytes:
                            raise CorruptRecordError(
                                f"batch at byte {position} of {segment.path} runs past its end"
                            )
                        yield header
                        expected = header.next_offset
                        consumed = header.size_bytes
                except CorruptRecordError as exc:
                    if exc.offset is not None:
                        raise
                    raise CorruptRecordError(str(exc), offset=expected) from exc
                position += consumed

    def _iter_headers(self) -> Iterator[BatchHeader]:
        """Every batch header, segment by segment; a segment's scan stops at corruption
        (reads of those batches fail their own checks)."""
        for segment in self._segments:
            position = 0
            try:
                while position < segment.size_bytes:
                    chunk = segment.pread(8 << 20, position)
                    consumed = 0
                    for rel, header in iter_batches(chunk, verify_crc=False):
                        yield header
                        consumed = rel + header.size_bytes
                    if consumed == 0:
                        header = segment.header_at(position)
                        yield header
                        consumed = header.size_bytes
                    position += consumed
            except CorruptRecordError:
                continue

    def _save_epochs(self, cache: LeaderEpochCache) -> None:
        if self._state is not None:
            self._state.save_epochs(self.name, cache.entries)

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
        with self._sync_lock:
            return self._recovery_point

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
        self._dir_changes += 1
        self._add_segment(segment)
        if self._background is None:
            self._sync_directory()
            self._advance_recovery_point(old.next_offset)
        else:
            # the fsync runs later on another thread; the recovery point waits for it
            pending = _PendingSync(old, old.next_offset)
            with self._sync_lock:
                self._pending_syncs.append(pending)
            fsync_segment = old.durable_later()
            changes = self._dir_changes  # the new segment's file is among them
            directories = self._directories_to_sync()

            def durable() -> None:
                fsync_segment()
                for directory in directories:
                    fsync_directory(directory)
                self._synced_in_background(pending, changes)

            self._background(durable)
        old.index.unload()
        old.time_index.unload()
        return segment

    # ---- durability: the recovery point ------------------------------------------------------

    def _directories_to_sync(self) -> list[str]:
        if self._parent_synced:
            return [self.directory]
        self._parent_synced = True  # the first sync after open also makes our own entry durable
        parent = os.path.dirname(os.path.abspath(self.directory))
        return [self.directory, parent]

    def _sync_directory(self) -> None:
        """fsync the directory if segment files were created or deleted since the last time."""
        changes = self._dir_changes
        with self._sync_lock:
            if self._dir_synced >= changes and self._parent_synced:
                return
        for directory in self._directories_to_sync():
            fsync_directory(directory)
        with self._sync_lock:
            self._dir_synced = max(self._dir_synced, changes)

    def _synced_in_background(self, pending: _PendingSync, dir_changes: int) -> None:
        """A rolled segment's fsync completed (on the background thread)."""
        with self._sync_lock:
            self._dir_synced = max(self._dir_synced, dir_changes)
            if not any(p is pending for p in self._pending_syncs):
                return  # a flush covered it, or a truncation made it moot
            pending.done = True
            point = None
            while self._pending_syncs and self._pending_syncs[0].done:
                point = self._pending_syncs.pop(0).next_offset
            if point is not None and point > self._recovery_point:
                self._recovery_point = point
                # a store that is closing keeps the lower saved point, which is safe
                with contextlib.suppress(lmdb.Error):
                    self._persist_recovery_point(point)

    def _advance_recovery_point(self, offset: int) -> None:
        """On the owner's thread, after the fsyncs that make everything below ``offset``
        durable (data, and directory entries) completed."""
        with self._sync_lock:
            if offset > self._recovery_point and not self._pending_syncs:
                self._recovery_point = offset
                self._persist_recovery_point(offset)

    def _lower_recovery_point(self, offset: int) -> None:
        """Before the bytes at ``offset`` and after change (truncation): from now on only
        what lies below ``offset`` may count as durable, on disk first."""
        with self._sync_lock:
            self._pending_syncs = [p for p in self._pending_syncs if p.next_offset <= offset]
            if offset < self._recovery_point:
                self._recovery_point = offset
                self._persist_recovery_point(offset)

    def _persist_recovery_point(self, offset: int) -> None:
        if self._state is not None:
            self._state.save_offsets("recovery_point", {self.name: offset})

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
        i = max(bisect_right(self._bases, offset) - 1, 0)
        found = None
        while i < len(self._segments):
            segment = self._segments[i]
            found = segment.find_batch(offset)
            self._touch(segment)
            if found is not None:
                break
            i += 1
        if found is None:
            # offset < end <= LEO, so some batch holds it: a header on the way lied about its size
            raise CorruptRecordError(
                f"no batch holds offset {offset} in {self.name}", offset=offset
            )
        position, header = found
        if header.base_offset > offset:  # never skip the missing offsets: name them
            raise CorruptRecordError(
                f"no batch holds offset {offset} in {self.name}: the next one starts at "
                f"{header.base_offset}",
                offset=offset,
            )
        nbytes = min(max(max_bytes, header.size_bytes), segment.size_bytes - position)
        chunk = segment.pread(nbytes, position)
        cut = 0
        next_offset = offset
        expected = header.base_offset
        reached_end = False
        try:
            for rel, h in iter_batches(chunk):
                if h.next_offset > end:
                    reached_end = True
                    break
                # base_offset and leader_epoch are stamped outside the CRC (as in Kafka's
                # format): offsets must be contiguous and epochs must match the epoch cache
                if h.base_offset != expected:
                    raise CorruptRecordError(f"batch claims offset {h.base_offset}, not {expected}")
                # a batch straddling the log start: the cache starts at the log start
                epoch = self.epochs.epoch_for_offset(max(h.base_offset, self._log_start_offset))
                if h.leader_epoch != epoch:
                    raise CorruptRecordError(
                        f"batch at offset {h.base_offset} has leader epoch {h.leader_epoch}, "
                        f"the epoch cache says {epoch}"
                    )
                cut = rel + h.size_bytes
                next_offset = expected = h.next_offset
        except CorruptRecordError as exc:
            if cut == 0:
                raise CorruptRecordError(
                    f"corrupt batch at byte {position} of {segment.path}: {exc}", offset=expected
                ) from exc
        if cut == 0:
            if reached_end:  # the batch holding ``offset`` straddles max_offset (the HW)
                return empty
            # the header claimed more bytes than the segment holds: never return "nothing" for
            # an offset below the end, or a reader would spin on it forever
            raise CorruptRecordError(
                f"batch at byte {position} of {segment.path} runs past the segment's end",
                offset=header.base_offset,
            )
        return ReadResult(chunk[:cut], next_offset, self._log_start_offset, self._next_offset)

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

    # ---- checking: scrub and verify ----------------------------------------------------------

    def scrub(self, max_bytes: int) -> ScrubResult:
        """Check closed segments a little at a time, from where the previous call stopped.

        Reads at most ``max_bytes`` (at least one batch header) and checks what it reads: CRC,
        offsets contiguous within and between segments, each batch's epoch against the epoch
        cache, and that the segment's file is still in the directory. Wraps around to the first
        segment after the last closed one, and visits each closed segment at most once a call.
        On damage it reports the first bad offset and moves on to the next segment (so a damage
        nobody repairs is reported again once a round, and the rest of the log is still checked);
        it never changes the log: the caller truncates and refetches.
        """
        closed = self._segments[:-1]
        if not closed:
            self._scrub_base, self._scrub_cursor = -1, None
            return ScrubResult(0, None, (self._segments[-1].base_offset, 0))
        i = bisect_right(self._bases, self._scrub_base) - 1
        if i < 0 or i >= len(closed) or self._bases[i] != self._scrub_base:
            i = i + 1 if 0 <= i + 1 < len(closed) else 0  # the segment went: the next one
            self._scrub_cursor = None
        checked = 0
        damaged: int | None = None
        visited = 0
        # a walk's first read may take one header beyond a smaller budget: only the first
        while (
            (checked == 0 or max_bytes - checked >= HEADER_BYTES)
            and visited < len(closed)
            and damaged is None
        ):
            segment = closed[i]
            cursor = self._scrub_cursor
            if cursor is None or self._scrub_base != segment.base_offset:
                cursor = BatchCursor(0, segment.base_offset)
                self._scrub_base, self._scrub_cursor = segment.base_offset, cursor
                if segment.file_problem() is not None:
                    damaged = segment.base_offset
            if damaged is None:
                read, finding = walk_batches(
                    segment.pread,
                    segment.size_bytes,
                    cursor,
                    max_bytes - checked,
                    epoch_for=self.epochs.epoch_for_offset,
                    log_start_offset=self._log_start_offset,
                )
                checked += read
                if finding is not None:
                    damaged = finding.offset
                elif cursor.position >= segment.size_bytes:
                    following = self._segments[i + 1].base_offset
                    if cursor.expected_offset != following:
                        damaged = min(cursor.expected_offset, following)
                else:
                    break  # the budget is spent inside this segment
            # the segment is done (or damaged): the next call starts at the next one
            i = i + 1 if i + 1 < len(closed) else 0
            visited += 1
            self._scrub_base, self._scrub_cursor = closed[i].base_offset, None
        cursor = self._scrub_cursor
        return ScrubResult(
            checked, damaged, (self._scrub_base, cursor.position if cursor is not None else 0)
        )

    def verify(self) -> int | None:
        """Check every batch of every segment now; the first damaged offset, or None."""
        found = self.verify_report()
        return None if found is None else found[0]

    def verify_report(self) -> tuple[int, str] | None:
        """Like ``verify``, with the reason: (first damaged offset, why) or None."""
        for i, segment in enumerate(self._segments):
            problem = segment.file_problem()
            if problem is not None:
                return segment.base_offset, problem
            cursor = BatchCursor(0, segment.base_offset)
            _, finding = walk_batches(
                segment.pread,
                segment.size_bytes,
                cursor,
                sys.maxsize,
                epoch_for=self.epochs.epoch_for_offset,
                log_start_offset=self._log_start_offset,
            )
            if finding is not None:
                return finding.offset, f"{segment.path}: {finding.reason}"
            end = self._bases[i + 1] if i + 1 < len(self._bases) else self._next_offset
            if cursor.expected_offset != end:
                return (
                    min(cursor.expected_offset, end),
                    f"{segment.path} ends at offset {cursor.expected_offset}, the log goes on "
                    f"at {end}",
                )
        return None

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
        # the new end is at or above the base of the segment that will hold it
        holder = self._bases[max(bisect_right(self._bases, offset - 1) - 1, 0)]
        self._lower_recovery_point(min(holder, offset))
        deleted = False
        while len(self._segments) > 1 and self._segments[-1].base_offset >= offset:
            self._segments.pop().delete()
            self._loaded.pop(self._bases.pop(), None)
            self._dir_changes += 1
            deleted = True
        active = self._segments[-1]
        self._loaded.pop(active.base_offset, None)
        self._next_offset = active.truncate_to(offset)
        active.flush()
        if deleted:
            self._sync_directory()
        if self.epochs.truncate_from_end(self._next_offset):
            self._save_epochs(self.epochs)
        return self._next_offset

    def truncate_fully_and_start_at(self, offset: int, now_ms: WallMs | None = None) -> None:
        """Drop everything and continue at ``offset`` (a follower behind the leader's start)."""
        now = self._clock.wall_ms() if now_ms is None else now_ms
        self._lower_recovery_point(0)  # a crash half way leaves a mixture: check it all
        for segment in self._segments:
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        self._loaded.clear()
        self._add_segment(self._new_segment(offset, now))
        self._dir_changes += 1
        self._sync_directory()
        self._next_offset = offset
        self._set_log_start(offset)
        with self._sync_lock:
            self._pending_syncs.clear()
            self._recovery_point = offset  # nothing lies below it, and the directory is synced
            self._persist_recovery_point(offset)
        self.epochs.clear()
        self._save_epochs(self.epochs)

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
                self._sync_directory()
        return self._log_start_offset

    def delete_retained(
        self, now_ms: WallMs | None = None, *, max_offset: int | None = None
    ) -> int:
        """Retention: delete whole old segments by time and size; return how many went.

        Never deletes the active segment, nor a segment holding offsets at or above
        ``max_offset`` (the high watermark: a leader keeps what followers may still need).
        """
        now = self._clock.wall_ms() if now_ms is None else now_ms
        limit = self._next_offset if max_offset is None else max_offset
        config = self.config
        deleted = 0
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
            self._sync_directory()
            self._set_log_start(max(self._log_start_offset, self._segments[0].base_offset))
        return deleted

    def _delete_oldest(self) -> None:
        oldest = self._segments.pop(0)
        self._bases.pop(0)
        self._loaded.pop(oldest.base_offset, None)
        oldest.delete()
        self._dir_changes += 1

    def _set_log_start(self, offset: int) -> None:
        self._log_start_offset = offset
        if self._state is not None:
            self._state.save_offsets("log_start", {self.name: offset})
        if self.epochs.truncate_from_start(offset):
            self._save_epochs(self.epochs)

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
        with self._sync_lock:
            waiting = {id(p.segment) for p in self._pending_syncs}
        for segment in self._segments:
            if segment.unflushed or id(segment) in waiting:
                segment.flush(force=id(segment) in waiting)
        self._sync_directory()
        self._unflushed_records = 0
        self._last_flush_ms = self._clock.wall_ms() if now_ms is None else now_ms
        with self._sync_lock:
            self._pending_syncs.clear()  # covered: their late completions change nothing
            if self._next_offset != self._recovery_point:
                self._recovery_point = self._next_offset
                self._persist_recovery_point(self._next_offset)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for segment in self._segments:
                segment.close()
            self._segments.clear()
            self._bases.clear()

    def delete(self) -> None:
        """Remove the log and its directory (topic deleted)."""
        for segment in self._segments:
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        try:
            os.rmdir(self.directory)
        except OSError as exc:
            raise StorageIOError(f"cannot remove {self.directory}: {exc}") from exc

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._segments:
            self.close()
