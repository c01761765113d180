"""Compaction on disk: the cleaning job that runs off the log owner's thread, the swap of a
cleaned segment into place, and what opening a log does with a swap a crash interrupted.

What is kept is decided by the pure ``cleaner.py``; the broker's service that picks a log and
runs a job on a thread is ``cluster/log_cleaner.py``; ``Log.begin_clean`` / ``Log.finish_clean``
(``log.py``) start a job from the log's segments and swap its result in on the owner's thread.

Thread model: a ``CleanJob`` owns duplicates of its source segments' descriptors and a
descriptor of the log directory, so the thread running it never touches a ``Log`` or a
``Segment``: the owner may append, read, truncate or delete the log meanwhile. It writes only
``*.cleaned`` files (created through the directory descriptor, so a deleted directory makes
it fail instead of writing elsewhere). The owner then checks that the log still holds the same
segments and was not truncated (``Log.finish_clean``) and swaps each cleaned segment in — or
discards it.

Files of one cleaned segment ``B`` (``<base_offset:020d>``) and the order that makes a power
loss at any instant safe (the old segment or the new one, never neither, never a mixture)::

    job thread  write B.log.cleaned (created first), B.index.cleaned, B.timeindex.cleaned;
                fsync all three, check the new log batch by batch, fsync the directory
    owner       1. rename B.log.cleaned -> B.log     (atomically replaces the old segment)
                2. fsync the directory                <- the commit point
                3. rename B.index.cleaned -> B.index, B.timeindex.cleaned -> B.timeindex
                   (made durable by the next segment's step 2 or the final directory fsync)

and at open (``finish_interrupted``), before the segments are listed:

* ``B.log.cleaned`` exists → the swap never committed: delete ``B.index.cleaned`` and
  ``B.timeindex.cleaned``, fsync the directory, then delete ``B.log.cleaned`` (in this order, so a
  crash in between never leaves index files that look committed). The old segment is intact.
* ``B.index.cleaned`` or ``B.timeindex.cleaned`` without ``B.log.cleaned`` → committed: the new
  log is in place; rename them over the old indexes (which describe the old file).

A discarded job is the first case, done at once. The new log was fsynced before step 1, and the
rename is atomic, so ``B.log`` is always one whole file; the indexes are derived data, and the
rule above pairs each log with its own.

*Merges.* A pass writes a run of consecutive small segments ``B, C, D`` as one (``merge_groups``
in ``cleaner.py``: sources summing to at most ``segment.bytes``) under the first one's name, and
a manifest ``B.merge.cleaned`` naming the others (created after ``B.log.cleaned``, fsynced with
it). The swap is the same up to the commit point, then::

                4. unlink C.* and D.* (log and indexes), fsync the directory
                5. unlink B.merge.cleaned

Until step 4 is durable the directory holds ``B.log`` overlapping ``C`` and ``D``; the open rule
for a committed swap (no ``B.log.cleaned``) with a manifest is to finish steps 4-5 before the
segments are listed. An uncommitted one removes the manifest with the indexes, before the log.

The cleaner swaps segments oldest first and moves its checkpoint only after the last one, so a
crash half way through a pass never drops a tombstone whose older records survived in a segment
not yet swapped (the next pass redoes the work).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .batch import HEADER_BYTES, BatchHeader, iter_batches, read_header
from .cleaner import (
    CleanStats,
    CompactionPolicy,
    OffsetMap,
    SegmentCleaner,
    map_batch,
    merge_groups,
)
from .durable import fsync_directory
from .epochs import UNDEFINED_EPOCH
from .errors import CorruptRecordError, StorageIOError
from .index import IndexBuilder
from .recovery import BatchCursor, walk_batches
from .segment import segment_file_name

__all__ = [
    "CLEANED",
    "CleanJob",
    "CleanedSegment",
    "JobResult",
    "RateLimiter",
    "SourceSegment",
    "discard_cleaned",
    "finish_interrupted",
    "run_job",
    "swap_log",
]

CLEANED = ".cleaned"  # the suffix of a cleaned file not yet in place
_CLEANED_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex|merge)\.cleaned$")
_READ_CHUNK_BYTES = 1 << 20


class RateLimiter:
    """A token bucket over bytes, for the cleaner's IO: ``spend(n)`` sleeps as long as the
    bytes spent so far run ahead of ``bytes_per_s``. Thread-safe (one lock); the clock and the
    sleep are parameters so a test runs it without waiting."""

    def __init__(
        self,
        bytes_per_s: int,
        *,
        burst_bytes: int | None = None,
        clock_s: Callable[[], float] = time.monotonic,
        sleep_s: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bytes_per_s = max(1, bytes_per_s)
        self.burst_bytes = burst_bytes if burst_bytes is not None else self.bytes_per_s
        self._clock = clock_s
        self._sleep = sleep_s
        self._lock = threading.Lock()
        self._tokens = float(self.burst_bytes)
        self._at = clock_s()

    def spend(self, nbytes: int) -> float:
        """Take ``nbytes``; sleep until the bucket is no longer in debt. Returns seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(
                float(self.burst_bytes), self._tokens + (now - self._at) * self.bytes_per_s
            )
            self._at = now
            self._tokens -= nbytes
            wait = -self._tokens / self.bytes_per_s if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """A closed segment to clean: a duplicate of its descriptor (the job closes it)."""

    base_offset: int
    next_offset: int
    size_bytes: int
    fd: int


@dataclass(slots=True)
class CleanJob:
    """One cleaning pass over a log, prepared by ``Log.begin_clean`` on the owner's thread and
    run by ``run_job`` on another."""

    directory: str
    dir_fd: int  # the log directory, opened when the job began (the job closes it)
    sources: tuple[SourceSegment, ...]
    dirty_from: int  # the offset map covers sources[dirty_from:] (as far as it fits)
    now_ms: int
    policy: CompactionPolicy
    retain_batches: frozenset[int]
    index_interval_bytes: int
    layout_version: int  # the log's, when the job began: a truncation since voids the job
    keys_max: int = 1 << 20
    uncompressed_bytes_max: int = 64 << 20
    limiter: RateLimiter | None = None
    merge_bytes_max: int = 0  # segment.bytes: runs of sources up to this are written as one
    abort: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    def close_sources(self) -> None:
        """Close the source segments' descriptors (``run_job`` does it when it ends)."""
        for source in self.sources:
            _close_quietly(source.fd)
        self.sources = tuple(SourceSegment(s.base_offset, s.next_offset, s.size_bytes, -1)
                             for s in self.sources)  # fmt: skip

    def discard(self, result: JobResult) -> None:
        """Remove a result's files without swapping them in (through the job's directory
        descriptor: the right directory even if the log's was deleted and made again)."""
        for cleaned in result.cleaned:
            _discard_quietly(self, cleaned.base_offset)

    def close(self) -> None:
        """Close every descriptor the job owns; its owner calls it once the result is swapped
        in or discarded."""
        if self.closed:
            return
        self.closed = True
        self.close_sources()
        _close_quietly(self.dir_fd)


@dataclass(frozen=True, slots=True)
class CleanedSegment:
    base_offset: int
    next_offset: int
    sources: tuple[tuple[int, int, int], ...]  # (base, next offset, size) of each one replaced
    size_bytes: int  # of the cleaned file (``*.log.cleaned``), ready to be swapped in

    @property
    def merged(self) -> list[int]:
        """The base offsets of the sources after the first: segments the swap removes."""
        return [base for base, _, _ in self.sources[1:]]


@dataclass(slots=True)
class JobResult:
    cleaned: list[CleanedSegment]  # segments rewritten, oldest first (unchanged ones are not)
    checkpoint: int  # the new cleaner checkpoint: the end of what the offset map covered
    stats: CleanStats
    error: str | None = None  # the job stopped (its files are gone); nothing to swap
    duration_ms: int = 0


class _Aborted(Exception):
    pass


def run_job(job: CleanJob) -> JobResult:
    """Clean ``job``'s segments into ``*.cleaned`` files (see the module docstring); on another
    thread than the log's owner. Never raises: an error or an abort is in the result, and the
    files it wrote are removed then. The owner then calls ``Log.finish_clean`` (or
    ``job.discard``) and ``job.close``."""
    started = time.monotonic()
    stats = CleanStats()
    written: list[CleanedSegment] = []
    try:
        offset_map = OffsetMap(job.keys_max)
        mapped = _build_map(job, offset_map, stats)  # sources[:mapped] are cleaned
        cleaned = job.sources[:mapped]
        spans = [(s.base_offset, s.next_offset, s.size_bytes) for s in cleaned]
        for start, end in merge_groups(spans, job.merge_bytes_max):
            done = _clean_run(job, cleaned[start:end], offset_map, stats)
            if done is not None:
                written.append(done)
        if written:
            fsync_directory(job.directory)  # the *.cleaned names, before any rename
        checkpoint = job.sources[mapped - 1].next_offset if mapped else 0
        result = JobResult(written, checkpoint, stats)
    except (_Aborted, CorruptRecordError, StorageIOError, OSError) as exc:
        for segment in written:
            _discard_quietly(job, segment.base_offset)
        reason = "aborted" if isinstance(exc, _Aborted) else f"{type(exc).__name__}: {exc}"
        result = JobResult([], 0, stats, error=reason)
    finally:
        job.close_sources()
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _build_map(job: CleanJob, offset_map: OffsetMap, stats: CleanStats) -> int:
    """Map the dirty segments, whole, until the map is full; how many sources the pass cleans
    (every segment before the first one left unmapped)."""
    count = job.dirty_from
    for source in job.sources[job.dirty_from :]:
        if offset_map.full and count > job.dirty_from:
            break  # the rest waits for the next pass
        for batch, header in _read_source(job, source, stats):
            map_batch(batch, header, offset_map, uncompressed_bytes_max=job.uncompressed_bytes_max)
        count += 1
    return count


def _read_source(
    job: CleanJob, source: SourceSegment, stats: CleanStats
) -> Iterator[tuple[bytes, BatchHeader]]:
    """The batches of a source segment, each checked (CRC, fields, offsets contiguous from the
    segment's base to its end); CorruptRecordError at the first that is not."""
    position = 0
    expected = source.base_offset
    while position < source.size_bytes:
        if job.abort.is_set():
            raise _Aborted
        want = min(_READ_CHUNK_BYTES, source.size_bytes - position)
        chunk = os.pread(source.fd, want, position)
        if len(chunk) >= HEADER_BYTES:
            size = read_header(chunk).size_bytes
            if size > len(chunk) and position + size <= source.size_bytes:
                chunk = os.pread(source.fd, size, position)  # one batch larger than a chunk
        if job.limiter is not None:
            job.limiter.spend(len(chunk))
        stats.bytes_read += len(chunk)
        consumed = 0
        for rel, header in iter_batches(chunk):
            if header.base_offset != expected:
                raise CorruptRecordError(
                    f"segment {source.base_offset}: batch at byte {position + rel} claims offset "
                    f"{header.base_offset}, expected {expected}"
                )
            expected = header.next_offset
            consumed = rel + header.size_bytes
            yield chunk[rel:consumed], header
        if consumed == 0:
            raise CorruptRecordError(
                f"segment {source.base_offset}: no whole batch at byte {position}"
            )
        position += consumed
    if expected != source.next_offset:
        raise CorruptRecordError(
            f"segment {source.base_offset} ends at offset {expected}, not {source.next_offset}"
        )


def _open_new(job: CleanJob, base_offset: int, suffix: str) -> int:
    name = segment_file_name(base_offset, suffix + CLEANED)
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=job.dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise StorageIOError("a write made no progress")
        view = view[n:]


def _clean_run(
    job: CleanJob, run: tuple[SourceSegment, ...], offset_map: OffsetMap, stats: CleanStats
) -> CleanedSegment | None:
    """Write the cleaned copy of a run of sources (one segment, or several merged) as
    ``*.cleaned`` files named after the first, fsynced and checked; None when cleaning one
    segment changes nothing. Nothing of the run is left when it returns None or raises."""
    if job.abort.is_set():
        raise _Aborted
    try:
        return _write_run(job, run, offset_map, stats)
    except BaseException:
        _discard_quietly(job, run[0].base_offset)  # the manifest before the log
        raise


def _write_run(
    job: CleanJob, run: tuple[SourceSegment, ...], offset_map: OffsetMap, stats: CleanStats
) -> CleanedSegment | None:
    source = run[0]
    cleaner = SegmentCleaner(
        offset_map,
        job.now_ms,
        job.policy.delete_retention_ms,
        job.retain_batches,
        job.uncompressed_bytes_max,
        stats=CleanStats(),
    )
    index = IndexBuilder(source.base_offset, job.index_interval_bytes)
    base = source.base_offset
    fd = _open_new(job, base, ".log")  # the log first: see the open rules
    position = 0
    try:
        if len(run) > 1:  # after the log: a manifest without its log would mean "committed"
            manifest_fd = _open_new(job, base, ".merge")
            try:
                _write_all(manifest_fd, "".join(f"{s.base_offset}\n" for s in run[1:]).encode())
                os.fsync(manifest_fd)
            finally:
                os.close(manifest_fd)
        else:  # one an earlier, interrupted pass left would turn this swap into a merge
            with contextlib.suppress(FileNotFoundError):
                os.unlink(segment_file_name(base, ".merge" + CLEANED), dir_fd=job.dir_fd)
        pending: list[bytes] = []
        pending_bytes = 0

        def emit(batches: list[bytes]) -> None:
            nonlocal position, pending_bytes
            for out in batches:
                header = read_header(out)
                index.add(header.base_offset, position, len(out), header.max_timestamp)
                position += len(out)
                pending.append(out)
                pending_bytes += len(out)
            if pending_bytes >= _READ_CHUNK_BYTES:
                flush()

        def flush() -> None:
            nonlocal pending_bytes
            if pending:
                data = b"".join(pending)
                if job.limiter is not None:
                    job.limiter.spend(len(data))
                _write_all(fd, data)
                pending.clear()
                pending_bytes = 0

        for each in run:
            for batch, header in _read_source(job, each, stats):
                emit(cleaner.add(batch, header))
        emit(cleaner.finish())
        flush()
        _add_stats(stats, cleaner.stats)
        if not cleaner.changed and len(run) == 1:
            os.close(fd)
            fd = -1
            _discard_quietly(job, base)
            return None
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    next_offset = run[-1].next_offset
    offsets, times = index.finish(next_offset)
    for suffix, data in ((".index", offsets), (".timeindex", times)):
        index_fd = _open_new(job, base, suffix)
        try:
            _write_all(index_fd, data)
            os.fsync(index_fd)
        finally:
            os.close(index_fd)
    stats.bytes_written += position
    _check_written(job, base, next_offset, position)
    sources = tuple((s.base_offset, s.next_offset, s.size_bytes) for s in run)
    return CleanedSegment(base, next_offset, sources, position)


def _check_written(job: CleanJob, base_offset: int, next_offset: int, size_bytes: int) -> None:
    """Read the new file back: every batch whole, CRC-valid and contiguous, from the run's
    base to exactly its old end (what recovery will demand of it)."""
    name = segment_file_name(base_offset, ".log" + CLEANED)
    fd = os.open(name, os.O_RDONLY, dir_fd=job.dir_fd)
    try:
        cursor = BatchCursor(0, base_offset, UNDEFINED_EPOCH)

        def pread(nbytes: int, position: int) -> bytes:
            return os.pread(fd, nbytes, position)

        _, finding = walk_batches(pread, size_bytes, cursor, size_bytes + HEADER_BYTES)
    finally:
        os.close(fd)
    if finding is not None or cursor.expected_offset != next_offset:
        reason = finding.reason if finding is not None else f"ends at {cursor.expected_offset}"
        raise CorruptRecordError(f"the cleaned segment {base_offset} is wrong: {reason}")


def _add_stats(total: CleanStats, part: CleanStats) -> None:
    total.batches_read += part.batches_read
    total.records_read += part.records_read
    total.records_removed += part.records_removed
    total.tombstones_removed += part.tombstones_removed
    total.batches_uncleanable += part.batches_uncleanable
    if part.next_delete_horizon_ms is not None:
        due = total.next_delete_horizon_ms
        total.next_delete_horizon_ms = (
            part.next_delete_horizon_ms if due is None else min(due, part.next_delete_horizon_ms)
        )


def _discard_quietly(job: CleanJob, base_offset: int) -> None:
    with contextlib.suppress(OSError):  # the next open removes what is left (uncommitted)
        _discard_at(job.dir_fd, base_offset)


def _discard_at(dir_fd: int, base_offset: int) -> None:
    """The uncommitted case's removal, through the directory's descriptor: the indexes, a
    directory fsync, then the log (index files left without their log would look committed)."""
    removed = False
    for suffix in (".index", ".timeindex", ".merge"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment_file_name(base_offset, suffix + CLEANED), dir_fd=dir_fd)
            removed = True
    if removed:
        os.fsync(dir_fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(segment_file_name(base_offset, ".log" + CLEANED), dir_fd=dir_fd)


def _close_quietly(fd: int) -> None:
    if fd < 0:
        return
    with contextlib.suppress(OSError):
        os.close(fd)


# ---- on the owner's thread: swap, discard, and finishing at open ---------------------------


def _path(directory: str, base_offset: int, suffix: str) -> str:
    return os.path.join(directory, segment_file_name(base_offset, suffix))


def swap_log(directory: str, base_offset: int, merged: Sequence[int] = ()) -> None:
    """Steps 1-5 of the module docstring for one cleaned segment: it replaces the old one
    (durably: the directory is fsynced), its indexes replace the old ones, and the segments
    ``merged`` into it go."""
    try:
        if not merged:  # a stale manifest would make the open rules finish a merge
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_path(directory, base_offset, ".merge" + CLEANED))
        os.rename(
            _path(directory, base_offset, ".log" + CLEANED), _path(directory, base_offset, ".log")
        )
        fsync_directory(directory)  # the commit point
        for suffix in (".index", ".timeindex"):
            source = _path(directory, base_offset, suffix + CLEANED)
            if os.path.exists(source):
                os.rename(source, _path(directory, base_offset, suffix))
        if merged:
            _finish_merge(directory, base_offset, merged)
    except OSError as exc:
        raise StorageIOError(f"cannot swap the cleaned segment {base_offset} in: {exc}") from exc


def _finish_merge(directory: str, base_offset: int, merged: Sequence[int]) -> None:
    """Steps 4-5: the merged segments' files go (durably), then the manifest."""
    for base in merged:
        for suffix in (".log", ".index", ".timeindex"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_path(directory, base, suffix))
    fsync_directory(directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(directory, base_offset, ".merge" + CLEANED))


def _read_manifest(directory: str, base_offset: int) -> list[int]:
    """The bases a committed merge replaced (every one above ``base_offset``; anything else in
    the file is ignored: it was fsynced whole before the commit)."""
    with open(_path(directory, base_offset, ".merge" + CLEANED)) as f:
        found = [int(line) for line in f.read().split() if line.isdigit()]
    return [base for base in found if base > base_offset]


def discard_cleaned(directory: str, base_offset: int) -> None:
    """Remove a cleaned segment not swapped in (its indexes and manifest first: the open
    rules)."""
    for suffix in (".index", ".timeindex", ".merge"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_path(directory, base_offset, suffix + CLEANED))
    fsync_directory(directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(directory, base_offset, ".log" + CLEANED))


def _index_fits(directory: str, base_offset: int) -> bool:
    """Whether the offset index's last entry points at a batch of the log with its offset (what
    ``Segment.load_closed`` trusts); a missing log or index fits trivially."""
    try:
        with open(_path(directory, base_offset, ".index"), "rb") as f:
            data = f.read()
        whole = len(data) - len(data) % 8
        if whole < 8:
            return True
        relative, position = struct.unpack_from(">II", data, whole - 8)
        with open(_path(directory, base_offset, ".log"), "rb") as f:
            f.seek(position)
            header = f.read(HEADER_BYTES)
        return len(header) == HEADER_BYTES and (
            read_header(header).base_offset == base_offset + relative
        )
    except FileNotFoundError:
        return True


def finish_interrupted(directory: str) -> list[str]:
    """At open, before the segments are listed: discard each uncommitted swap and complete each
    committed one (the module docstring's rules). Returns what it did, one line each."""
    found: dict[int, set[str]] = {}
    for entry in os.listdir(directory):
        match = _CLEANED_NAME.match(entry)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    done: list[str] = []
    for base, kinds in sorted(found.items()):
        if "log" in kinds:
            discard_cleaned(directory, base)
            done.append(f"{segment_file_name(base, '.log')}: an unfinished clean discarded")
            continue
        for kind in sorted(kinds - {"merge"}):
            os.rename(
                _path(directory, base, f".{kind}{CLEANED}"), _path(directory, base, f".{kind}")
            )
        if not _index_fits(directory, base):  # damaged: both are rebuildable, so drop them
            for suffix in (".index", ".timeindex"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_path(directory, base, suffix))
        if "merge" in kinds:
            merged = _read_manifest(directory, base)
            _finish_merge(directory, base, merged)
            done.append(
                f"{segment_file_name(base, '.log')}: a committed merge finished "
                f"({len(merged)} merged segment(s) removed)"
            )
            continue
        done.append(f"{segment_file_name(base, '.log')}: a committed clean's indexes put in place")
    if done:
        fsync_directory(directory)
    return done
