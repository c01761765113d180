"""The log cleaner's core (Kafka's ``LogCleaner``): what a compacted log keeps.

Pure: batches in, batches out — no files, threads or clocks (``now_ms`` comes in). The IO shell
that reads segments, writes the cleaned files and swaps them in is ``compaction.py``; the
broker's background service that picks a log and runs it off the loop is
``cluster/log_cleaner.py``. Owned by one cleaning job on one thread; not thread-safe.

The rules (Kafka's, for ``cleanup.policy=compact``):

1. *Latest per key.* A pass first builds an ``OffsetMap`` (key → the greatest offset holding it)
   over the *dirty* section — from the cleaner checkpoint (where the last pass stopped) to the
   first uncleanable offset. A record is then kept only if no greater offset of its key is in
   the map. Keys are compared by a 128-bit digest (Kafka compares MD5s): a collision would drop a
   record, at odds of about 2^-64 for a billion keys.
2. *Tombstones* (a null value) are kept for ``delete.retention.ms`` after the cleaner first kept
   them: it then stamps the batch with a *delete horizon* (now + ``delete.retention.ms``,
   ``batch.py``'s bit 6, Kafka's KIP-534); a pass after the horizon drops them. A consumer that
   reads the log within ``delete.retention.ms`` of a delete therefore sees it.
3. *Offsets never change.* Records are dropped, never moved: a batch keeps its base offset, its
   last offset delta and its producer fields; its records keep their offset deltas. A batch left
   with no records becomes an *empty batch* (a header alone); a run of empty batches of the same
   leader epoch becomes one empty batch covering the run — unless a batch carries a producer's
   retained sequence (``retain_batches``: the idempotent producer's last batches, which the
   producer state rebuilt from the log needs), which keeps its own header. So offsets still run
   on from batch to batch (recovery, follower appends and reads check exactly that) and a fetch
   from a removed offset returns the batch holding it, whose first record is the next kept one.
4. *Not everything is cleanable.* The active segment, anything at or above the high watermark
   (or not yet fsynced), and segments newer than ``min.compaction.lag.ms`` are left alone
   (``plan_clean``); a log is cleaned only when its dirty bytes are at least
   ``min.cleanable.dirty.ratio`` of its cleanable bytes.
5. Records without a key are dropped (a compacted topic refuses them at produce; these predate a
   switch of the policy — Kafka drops them too). A batch whose payload does not decompress
   within the bound, and any control or transactional batch, is kept as it is.

Compressed batches are decompressed, filtered and compressed again with the same codec; the
records that stay are copied byte for byte (only their timestamp delta is re-encoded when the
batch's first timestamp changes, see ``batch.rebased_record``). Every rewritten batch gets its
CRC computed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from .batch import (
    CONTROL_FLAG,
    DELETE_HORIZON_FLAG,
    TRANSACTIONAL_FLAG,
    UNCOMPRESSED_BYTES_MAX,
    BatchHeader,
    batch_payload,
    encode_batch,
    iter_raw_records,
    rebased_record,
)
from .errors import CorruptRecordError

__all__ = [
    "CleanPlan",
    "CleanStats",
    "CompactionPolicy",
    "OffsetMap",
    "SegmentCleaner",
    "SegmentSpan",
    "key_digest",
    "map_batch",
    "plan_clean",
]

_CODEC_MASK = 0x07
_UNCLEANABLE = CONTROL_FLAG | TRANSACTIONAL_FLAG
_DELTA_MAX = 0x7FFFFFFF  # last_offset_delta is an int32: an empty batch spans at most this


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """A compacted topic's settings (Kafka's names and defaults)."""

    delete_retention_ms: int = 86_400_000  # delete.retention.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms


def key_digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16).digest()


class OffsetMap:
    """Key digest → the greatest offset seen holding it. Bounded: ``full`` once it holds
    ``keys_max`` keys (the caller stops mapping at the next segment boundary)."""

    def __init__(self, keys_max: int = 1 << 20) -> None:
        self.keys_max = keys_max
        self._latest: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def full(self) -> bool:
        return len(self._latest) >= self.keys_max

    def put(self, key: bytes, offset: int) -> None:
        digest = key_digest(key)
        if offset > self._latest.get(digest, -1):
            self._latest[digest] = offset

    def latest(self, key: bytes) -> int | None:
        return self._latest.get(key_digest(key))


def _cleanable(header: BatchHeader) -> bool:
    return not header.attributes & _UNCLEANABLE


def map_batch(
    batch: bytes | memoryview,
    header: BatchHeader,
    offset_map: OffsetMap,
    *,
    uncompressed_bytes_max: int = UNCOMPRESSED_BYTES_MAX,
) -> int:
    """Put every keyed record of ``batch`` into ``offset_map``; how many records it held (0 for a
    batch that cannot be cleaned: it is kept whole, and its keys need not be mapped)."""
    if not _cleanable(header) or header.record_count == 0:
        return 0
    try:
        data = batch_payload(batch, header, uncompressed_bytes_max=uncompressed_bytes_max)
        records = list(iter_raw_records(header, data))
    except CorruptRecordError:  # RecordTooLargeError too: kept as it is (rule 5)
        return 0
    base = header.base_offset
    for record in records:
        if record.key is not None:
            offset_map.put(record.key, base + record.offset_delta)
    return len(records)


@dataclass(slots=True)
class CleanStats:
    batches_read: int = 0
    records_read: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    batches_uncleanable: int = 0  # kept whole: undecodable, control or transactional
    bytes_read: int = 0
    bytes_written: int = 0
    next_delete_horizon_ms: int | None = None  # the earliest horizon of a batch kept


@dataclass(slots=True)
class _EmptyRun:
    """Consecutive batches that lost every record, waiting to become one empty batch."""

    first: BatchHeader
    last_offset: int
    first_timestamp: int
    max_timestamp: int


@dataclass(slots=True)
class SegmentCleaner:
    """Filters one segment's batches, in offset order, into the cleaned segment's batches.

    Feed every batch to ``add`` and call ``finish`` at the end of the segment; each returns the
    output batches now ready. ``changed`` says whether the output differs from the input at all
    (an unchanged segment is not rewritten).
    """

    offset_map: OffsetMap
    now_ms: int
    delete_retention_ms: int
    retain_batches: frozenset[int] = frozenset()  # base offsets whose headers must stay
    uncompressed_bytes_max: int = UNCOMPRESSED_BYTES_MAX
    stats: CleanStats = field(default_factory=CleanStats)
    changed: bool = False
    _run: _EmptyRun | None = None

    def add(self, batch: bytes, header: BatchHeader) -> list[bytes]:
        stats = self.stats
        stats.batches_read += 1
        stats.bytes_read += len(batch)
        if header.record_count == 0:  # empty already: may join a run
            return self._empty(batch, header, rewritten=False)
        if not _cleanable(header):
            stats.batches_uncleanable += 1
            return self._emit_after_run(batch)
        try:
            data = batch_payload(batch, header, uncompressed_bytes_max=self.uncompressed_bytes_max)
            records = list(iter_raw_records(header, data))
        except CorruptRecordError:
            stats.batches_uncleanable += 1
            return self._emit_after_run(batch)
        stats.records_read += len(records)
        base = header.base_offset
        had_horizon = header.has_delete_horizon
        kept = []
        tombstones = 0
        for record in records:
            if record.key is None:
                continue  # rule 5
            latest = self.offset_map.latest(record.key)
            if latest is not None and latest > base + record.offset_delta:
                if record.tombstone:
                    stats.tombstones_removed += 1
                continue  # a newer record of the key is kept
            if record.tombstone:
                if had_horizon and self.now_ms >= header.first_timestamp:
                    stats.tombstones_removed += 1
                    continue  # past its delete horizon
                tombstones += 1
            kept.append(record)
        stats.records_removed += len(records) - len(kept)
        if not kept:
            return self._empty(batch, header, rewritten=True)
        # the batch's first timestamp: the delete horizon while it keeps tombstones (set now
        # if it had none), else its first record's own time
        if tombstones:
            horizon = (
                header.first_timestamp if had_horizon else self.now_ms + self.delete_retention_ms
            )
            first_timestamp, attributes = horizon, header.attributes | DELETE_HORIZON_FLAG
            due = stats.next_delete_horizon_ms
            stats.next_delete_horizon_ms = horizon if due is None else min(due, horizon)
        elif had_horizon:
            first_timestamp = min(header.first_timestamp + r.timestamp_delta for r in kept)
            attributes = header.attributes & ~DELETE_HORIZON_FLAG
        else:
            first_timestamp, attributes = header.first_timestamp, header.attributes
        if len(kept) == len(records) and first_timestamp == header.first_timestamp:
            return self._emit_after_run(batch)  # nothing to change: the very same bytes
        shift = header.first_timestamp - first_timestamp
        if shift:
            body = b"".join(rebased_record(data, r, r.timestamp_delta + shift) for r in kept)
        else:
            body = b"".join(data[r.start : r.end] for r in kept)
        out = encode_batch(
            header, body, record_count=len(kept), attributes=attributes,
            first_timestamp=first_timestamp,
        )  # fmt: skip
        self.changed = True
        return self._emit_after_run(out)

    def finish(self) -> list[bytes]:
        return self._flush_run()

    # ---- empty batches --------------------------------------------------------------------

    def _empty(self, batch: bytes, header: BatchHeader, *, rewritten: bool) -> list[bytes]:
        """A batch with no records left: its own header if a producer needs it, else part of
        a run of empty batches of its epoch."""
        first_ts = header.max_timestamp if header.has_delete_horizon else header.first_timestamp
        if header.base_offset in self.retain_batches:
            out = batch
            if rewritten:
                self.changed = True
                out = encode_batch(
                    header, b"", record_count=0, attributes=0, first_timestamp=first_ts
                )
            return self._emit_after_run(out)
        run = self._run
        if (
            run is not None
            and run.first.leader_epoch == header.leader_epoch
            and header.last_offset - run.first.base_offset <= _DELTA_MAX
        ):
            run.last_offset = header.last_offset
            run.first_timestamp = min(run.first_timestamp, first_ts)
            run.max_timestamp = max(run.max_timestamp, header.max_timestamp)
            self.changed = True  # two batches become one
            return []
        ready = self._flush_run()
        self._run = _EmptyRun(header, header.last_offset, first_ts, header.max_timestamp)
        self.changed |= rewritten
        return ready

    def _flush_run(self) -> list[bytes]:
        run = self._run
        if run is None:
            return []
        self._run = None
        first = run.first
        header = first._replace(
            max_timestamp=run.max_timestamp, producer_id=-1, producer_epoch=-1, base_sequence=-1
        )
        empty = encode_batch(
            header,
            b"",
            record_count=0,
            attributes=0,
            first_timestamp=run.first_timestamp,
            last_offset_delta=run.last_offset - first.base_offset,
        )
        self.stats.bytes_written += len(empty)
        return [empty]

    def _emit_after_run(self, batch: bytes) -> list[bytes]:
        out = self._flush_run()
        out.append(batch)
        self.stats.bytes_written += len(batch)
        return out


# ---- which segments a pass cleans ----------------------------------------------------------

RELATIVE_OFFSET_MAX = 2**31 - 1  # an index entry's offset relative to its segment's base


def merge_groups(spans: Sequence[tuple[int, int, int]], max_bytes: int) -> list[tuple[int, int]]:
    """Runs of consecutive segments (base offset, next offset, size) a pass writes as one,
    as (start, end) index ranges covering ``spans`` in order: each run as long as its sources
    sum to at most ``max_bytes`` (``segment.bytes``: a cleaned run is never larger than its
    sources) and its offsets fit an index's relative offsets. Kafka's ``groupSegmentsBySize``:
    segments compaction has shrunk are merged instead of holding a descriptor each forever."""
    runs: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, (_, next_offset, size_bytes) in enumerate(spans):
        if i > start and (
            size + size_bytes > max_bytes or next_offset - spans[start][0] > RELATIVE_OFFSET_MAX
        ):
            runs.append((start, i))
            start, size = i, 0
        size += size_bytes
    if spans:
        runs.append((start, len(spans)))
    return runs


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """What the plan needs of one closed segment."""

    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CleanPlan:
    """A pass over ``segments`` (every cleanable segment, oldest first); the offset map covers
    ``segments[dirty_from:]``, from ``first_dirty_offset`` on."""

    segments: tuple[SegmentSpan, ...]
    dirty_from: int  # index of the first dirty segment (len(segments): none is dirty)
    first_dirty_offset: int
    dirty_ratio: float


def plan_clean(
    closed: Sequence[SegmentSpan],
    *,
    first_dirty_offset: int,
    limit_offset: int,
    now_ms: int,
    policy: CompactionPolicy,
    delete_horizon_ms: int | None = None,
) -> CleanPlan | None:
    """The pass to run over ``closed`` (the log's closed segments, oldest first), or None when
    there is none worth running.

    Cleanable: from the first segment up to (not including) the first segment that reaches
    ``limit_offset`` (the high watermark or the recovery point, whichever is lower) or holds a
    record newer than ``now_ms - min.compaction.lag.ms``. Dirty: the cleanable segments ending
    after ``first_dirty_offset`` (the cleaner checkpoint). Run when dirty bytes / cleanable bytes
    >= ``min.cleanable.dirty.ratio`` — or, dirty or not, once ``now_ms`` reaches
    ``delete_horizon_ms``, the earliest delete horizon the last pass left (Kafka's KIP-534: a
    tombstone goes soon after its horizon, not whenever enough new data comes to trigger a pass).
    """
    cleanable: list[SegmentSpan] = []
    for span in closed:
        if span.next_offset > limit_offset:
            break
        if policy.min_compaction_lag_ms > 0 and (
            span.max_timestamp_ms > now_ms - policy.min_compaction_lag_ms
        ):
            break
        cleanable.append(span)
    dirty_from = next(
        (i for i, s in enumerate(cleanable) if s.next_offset > first_dirty_offset), len(cleanable)
    )
    total = sum(s.size_bytes for s in cleanable)
    dirty = sum(s.size_bytes for s in cleanable[dirty_from:])
    if total <= 0:
        return None
    ratio = dirty / total
    horizon_due = delete_horizon_ms is not None and now_ms >= delete_horizon_ms
    if not horizon_due and (dirty <= 0 or ratio < policy.min_cleanable_dirty_ratio):
        return None
    # the map covers whole segments: from the start of the one holding the checkpoint
    first_dirty = cleanable[dirty_from].base_offset if dirty_from < len(cleanable) else 0
    return CleanPlan(tuple(cleanable), dirty_from, first_dirty, ratio)
