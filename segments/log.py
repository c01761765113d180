"""The log of one partition replica: ordered segments, appends, reads, truncation, retention.

Owned by the broker's replica of one partition; not thread-safe: the replica manager holds the
partition lock around every call. Time comes in as ``now_ms`` so rolling, flushing and retention
are deterministic under test.

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
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .batch import BatchHeader, iter_batches, stamped_prefix, validate_batch
from .epochs import LeaderEpochCache
from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOffsetMismatchError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageIOError,
)
from .segment import Segment, WriteV, segment_file_name
from .state import BrokerStateStore

__all__ = ["AppendInfo", "Log", "LogConfig", "ReadResult"]

_SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)$")
_RELATIVE_OFFSET_MAX = 0xFFFFFFFF
_SEGMENT_BYTES_MAX = 0x7FFFFFFF  # positions in the index are uint32; stay well inside


def _wall_ms() -> int:
    return int(time.time() * 1000)


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
    """All segments of one partition replica."""

    def __init__(
        self,
        directory: str,
        config: LogConfig | None = None,
        *,
        now_ms: int | None = None,
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
        now = _wall_ms() if now_ms is None else now_ms
        os.makedirs(directory, exist_ok=True)
        self._segments: list[Segment] = []  # sorted by base_offset; the last one is active
        self._bases: list[int] = []  # the segments' base offsets, for bisect
        self._loaded: OrderedDict[int, Segment] = OrderedDict()  # closed segments, LRU
        self._unflushed_records = 0
        self._last_flush_ms = now
        self.recovered_bytes_truncated = 0  # what the last open cut off a torn tail
        self._open_segments(now)
        last = self._segments[-1]
        self._next_offset = last.next_offset  # the LEO; 0 <= log_start_offset <= LEO
        first_base = self._segments[0].base_offset
        checkpoint = log_start_offset
        if checkpoint is None and state is not None:
            checkpoint = state.get_offset("log_start", self.name)
        self._log_start_offset = max(first_base, min(checkpoint or 0, self._next_offset))
        self.epochs = self._load_epochs()

    # ---- opening -------------------------------------------------------------------------------

    def _open_segments(self, now_ms: int) -> None:
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
            return
        for segment in self._segments[:-1]:
            segment.load_closed()
        active = self._segments[-1]
        result = active.recover(from_last_index_entry=True)
        self.recovered_bytes_truncated = result.truncated_bytes
        # the age of a reopened active segment counts from now (the broker's clock, not the
        # producers' timestamps, which may be skewed): a restart can delay a roll by segment_ms
        # a segment that starts past the previous one's end means data went missing mid-log
        for prev, seg in zip(self._segments, self._segments[1:], strict=False):
            if prev.next_offset > seg.base_offset:
                raise CorruptRecordError(
                    f"segment {seg.path} starts at {seg.base_offset}, inside the previous one"
                )

    def _new_segment(self, base_offset: int, now_ms: int) -> Segment:
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

    def _load_epochs(self) -> LeaderEpochCache:
        entries = self._state.load_epochs(self.name) if self._state is not None else None
        if entries is None:
            cache = LeaderEpochCache()
            for header in self._iter_headers():
                # below the start is gone; an epoch that goes backwards is a corrupt header
                # (epochs are outside the CRC) and its batch will fail the read-side check
                if (
                    header.next_offset > self._log_start_offset
                    and header.leader_epoch >= cache.latest_epoch
                ):
                    cache.assign(header.leader_epoch, header.base_offset)
        else:
            cache = LeaderEpochCache(entries)
        changed = cache.truncate_from_end(self._next_offset)
        changed |= cache.truncate_from_start(self._log_start_offset)
        if changed or entries is None:
            self._save_epochs(cache)
        return cache

    def iter_headers(self, start_offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches holding ``start_offset`` and after, in order (no CRC checks:
        for rebuilding state such as producer ids; reads of the data check CRCs themselves)."""
        if start_offset >= self._next_offset:
            return
        start_offset = max(start_offset, self._log_start_offset)
        i = max(bisect_right(self._bases, start_offset) - 1, 0)
        for segment in self._segments[i:]:
            position = 0
            if segment.base_offset <= start_offset:
                found = segment.find_batch(start_offset)
                position = found[0] if found is not None else segment.size_bytes
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

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (greatest epoch <= ``epoch``, where it ends in this log)."""
        return self.epochs.end_offset_for(epoch, self._next_offset)

    # ---- appending -----------------------------------------------------------------------------

    def append(
        self,
        batch: bytes | bytearray | memoryview,
        *,
        leader_epoch: int,
        now_ms: int | None = None,
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
        self, data: bytes | bytearray | memoryview, *, now_ms: int | None = None
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
        now_ms: int | None,
    ) -> AppendInfo:
        size = header.batch_length + 12
        if size > self.config.segment_bytes:
            raise MessageTooLargeError(
                f"batch of {size} bytes is larger than segment.bytes={self.config.segment_bytes}"
            )
        now = _wall_ms() if now_ms is None else now_ms
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

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new segment at the LEO (no-op if the active segment is empty)."""
        if self._segments[-1].size_bytes:
            self._roll(self._next_offset, _wall_ms() if now_ms is None else now_ms)

    def _roll(self, base_offset: int, now_ms: int) -> Segment:
        old = self._segments[-1]
        old.time_index.maybe_append(old.max_timestamp_ms, old.next_offset - 1 - old.base_offset)
        if self._background is None:
            old.flush()  # fsync on roll: every closed segment is durable
        else:
            self._background(old.durable_later())
        old.index.unload()
        old.time_index.unload()
        segment = self._new_segment(base_offset, now_ms)
        self._add_segment(segment)
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
            raise CorruptRecordError(f"no batch holds offset {offset} in {self.name}")
        position, header = found
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
                if h.leader_epoch != self.epochs.epoch_for_offset(h.base_offset):
                    raise CorruptRecordError(
                        f"batch at offset {h.base_offset} has leader epoch {h.leader_epoch}, "
                        f"the epoch cache says {self.epochs.epoch_for_offset(h.base_offset)}"
                    )
                cut = rel + h.size_bytes
                next_offset = expected = h.next_offset
        except CorruptRecordError as exc:
            if cut == 0:
                raise CorruptRecordError(
                    f"corrupt batch at byte {position} of {segment.path}: {exc}"
                ) from exc
        if cut == 0:
            if reached_end:  # the batch holding ``offset`` straddles max_offset (the HW)
                return empty
            # the header claimed more bytes than the segment holds: never return "nothing" for
            # an offset below the end, or a reader would spin on it forever
            raise CorruptRecordError(
                f"batch at byte {position} of {segment.path} runs past the segment's end"
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
        while len(self._segments) > 1 and self._segments[-1].base_offset >= offset:
            self._segments.pop().delete()
            self._loaded.pop(self._bases.pop(), None)
        active = self._segments[-1]
        self._loaded.pop(active.base_offset, None)
        self._next_offset = active.truncate_to(offset)
        active.flush()
        if self.epochs.truncate_from_end(self._next_offset):
            self._save_epochs(self.epochs)
        return self._next_offset

    def truncate_fully_and_start_at(self, offset: int, now_ms: int | None = None) -> None:
        """Drop everything and continue at ``offset`` (a follower behind the leader's start)."""
        now = _wall_ms() if now_ms is None else now_ms
        for segment in self._segments:
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        self._loaded.clear()
        self._add_segment(self._new_segment(offset, now))
        self._next_offset = offset
        self._set_log_start(offset)
        self.epochs.clear()
        self._save_epochs(self.epochs)

    def advance_log_start(self, offset: int) -> int:
        """Move the log start forward (DeleteRecords); whole segments below it are deleted."""
        if offset > self._next_offset:
            raise OffsetOutOfRangeError(f"log start {offset} beyond the end {self._next_offset}")
        if offset > self._log_start_offset:
            self._set_log_start(offset)
            while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                self._delete_oldest()
        return self._log_start_offset

    def delete_retained(self, now_ms: int | None = None, *, max_offset: int | None = None) -> int:
        """Retention: delete whole old segments by time and size; return how many went.

        Never deletes the active segment, nor a segment holding offsets at or above
        ``max_offset`` (the high watermark: a leader keeps what followers may still need).
        """
        now = _wall_ms() if now_ms is None else now_ms
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
            self._set_log_start(max(self._log_start_offset, self._segments[0].base_offset))
        return deleted

    def _delete_oldest(self) -> None:
        oldest = self._segments.pop(0)
        self._bases.pop(0)
        self._loaded.pop(oldest.base_offset, None)
        oldest.delete()

    def _set_log_start(self, offset: int) -> None:
        self._log_start_offset = offset
        if self._state is not None:
            self._state.save_offsets("log_start", {self.name: offset})
        if self.epochs.truncate_from_start(offset):
            self._save_epochs(self.epochs)

    # ---- lifecycle -------------------------------------------------------------------------------

    def flush(self, now_ms: int | None = None) -> None:
        """fsync every segment with unflushed writes (normally just the active one)."""
        for segment in self._segments:
            if segment.unflushed:
                segment.flush()
        self._unflushed_records = 0
        self._last_flush_ms = _wall_ms() if now_ms is None else now_ms

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
