"""One segment of a partition log: a ``.log`` file of batches plus its two sparse indexes.

Owned by its ``Log``; not thread-safe (the partition lock serialises access).

``<base_offset:020d>.log`` is batches back to back, exactly as described in ``batch.py``, each
checked by its own CRC. A segment never holds an offset below its base offset; only the last
segment of a log (the *active* one) is appended to. Appends go through one ``writev`` of the
stamped 16-byte prefix and the rest of the producer's bytes, so a batch is never copied in
Python.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .batch import HEADER_BYTES, LOG_OVERHEAD, MAGIC, BatchHeader, iter_batches, read_header
from .epochs import UNDEFINED_EPOCH
from .errors import CorruptRecordError, LogDirFullError, StorageIOError
from .index import OffsetIndex, TimeIndex
from .recovery import BatchCursor, Finding, data_follows, walk_batches

__all__ = ["RecoveryResult", "Segment", "segment_file_name"]

# The append path's system call, replaceable by tests that inject disk faults.
WriteV = Callable[[int, Sequence[bytes | memoryview]], int]


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


@dataclass(slots=True)
class RecoveryResult:
    next_offset: int  # offset after the last valid batch (base_offset when empty)
    truncated_bytes: int  # bytes cut off after the last valid batch
    finding: Finding | None  # why the scan stopped before the end; None: it reached the end
    torn: bool  # the finding is an incomplete batch ending the file with no good data after it
    last_epoch: int  # the epoch of the last valid batch (or the floor passed in)


class Segment:
    """A ``.log`` file, its offset index and time index."""

    def __init__(
        self,
        directory: str,
        base_offset: int,
        *,
        index_interval_bytes: int,
        created_ms: int,
        writev: WriteV = os.writev,
    ) -> None:
        self.base_offset = base_offset  # every batch in here has base_offset >= this
        self.path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        self.index = OffsetIndex(os.path.join(directory, segment_file_name(base_offset, ".index")))
        self.time_index = TimeIndex(
            os.path.join(directory, segment_file_name(base_offset, ".timeindex"))
        )
        self._index_interval_bytes = index_interval_bytes
        self._writev = writev
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StorageIOError(f"cannot open {self.path}: {exc}") from exc
        self.size_bytes = os.fstat(self._fd).st_size  # == file size, always
        self.next_offset = base_offset  # one past the last offset stored; set by recover/scan
        self.created_ms = created_ms
        self.max_timestamp_ms = -1  # largest batch max_timestamp in the segment
        self._offset_of_max_timestamp = base_offset
        # the first batch of a segment is always indexed
        self._bytes_since_index_entry = index_interval_bytes
        self.unflushed = False

    # ---- appending -----------------------------------------------------------------------------

    def append(
        self, prefix: bytes, batch: memoryview, header: BatchHeader, base_offset: int
    ) -> int:
        """Write ``prefix + batch[16:]``; return the position it starts at.

        On any write error the file is cut back to its old size, so the segment is exactly as it
        was before the call.
        """
        position = self.size_bytes
        total = len(batch)
        try:
            written = self._writev(self._fd, [prefix, batch[16:]])
            while written < total:  # a short write: finish it or fail (ENOSPC comes here)
                rest = (prefix + bytes(batch[16:]))[written:]
                n = self._writev(self._fd, [rest])
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                written += n
        except OSError as exc:
            self._rollback(position)
            if exc.errno == errno.ENOSPC:
                raise LogDirFullError(f"disk full appending to {self.path}") from exc
            raise StorageIOError(f"write to {self.path} failed: {exc}") from exc
        self.size_bytes = position + total
        self.unflushed = True
        last_offset = base_offset + header.last_offset_delta
        self._note_batch(base_offset, last_offset, header.max_timestamp, position, total)
        return position

    def _rollback(self, position: int) -> None:
        try:
            os.ftruncate(self._fd, position)
        except OSError as exc:  # the disk is gone; nothing consistent can be promised now
            raise StorageIOError(f"cannot roll back {self.path}: {exc}") from exc

    def _note_batch(
        self, base_offset: int, last_offset: int, max_timestamp_ms: int, position: int, size: int
    ) -> None:
        if max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = max_timestamp_ms
            self._offset_of_max_timestamp = base_offset
        if self._bytes_since_index_entry >= self._index_interval_bytes:
            self.index.append(base_offset - self.base_offset, position)
            self.time_index.maybe_append(
                self.max_timestamp_ms, self._offset_of_max_timestamp - self.base_offset
            )
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += size
        self.next_offset = last_offset + 1

    def _note_header(self, position: int, header: BatchHeader) -> None:
        """``_note_batch`` for a scanned header (recovery's per-batch hot path, inlined)."""
        base_offset = header.base_offset
        if header.max_timestamp > self.max_timestamp_ms:
            self.max_timestamp_ms = header.max_timestamp
            self._offset_of_max_timestamp = base_offset
        if self._bytes_since_index_entry >= self._index_interval_bytes:
            self.index.append(base_offset - self.base_offset, position)
            if self.max_timestamp_ms > self.time_index.last_timestamp():
                self.time_index.maybe_append(
                    self.max_timestamp_ms, self._offset_of_max_timestamp - self.base_offset
                )
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += header.batch_length + LOG_OVERHEAD
        self.next_offset = base_offset + header.last_offset_delta + 1

    # ---- reading -------------------------------------------------------------------------------

    def pread(self, nbytes: int, position: int) -> bytes:
        try:
            return os.pread(self._fd, nbytes, position)
        except OSError as exc:
            raise StorageIOError(f"read of {self.path} failed: {exc}") from exc

    def header_at(self, position: int) -> BatchHeader:
        """The header at ``position``, checked enough that walking by its length makes progress."""
        header = read_header(self.pread(HEADER_BYTES, position))
        if header.magic != MAGIC or header.batch_length < HEADER_BYTES - LOG_OVERHEAD:
            raise CorruptRecordError(f"no batch header at byte {position} of {self.path}")
        return header

    def find_batch(self, offset: int, start_position: int = 0) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch with last_offset >= ``offset``.

        Starts at the index entry at or below ``offset`` (or ``start_position`` if later) and
        scans batch headers forward: at most ``index_interval_bytes`` of batches.
        """
        rel, position = self.index.lookup(offset - self.base_offset)
        expected = self.base_offset + rel  # the indexed batch starts exactly here
        if start_position > position:
            position, expected = start_position, -1
        while position < self.size_bytes:
            try:
                header = self.header_at(position)
            except CorruptRecordError as exc:
                known = expected if expected >= 0 else None
                raise CorruptRecordError(str(exc), offset=known) from exc
            # base_offset is outside the CRC: contiguity is what catches a flipped bit in it
            if expected >= 0 and header.base_offset != expected:
                raise CorruptRecordError(
                    f"batch at byte {position} of {self.path} claims offset "
                    f"{header.base_offset}, expected {expected}",
                    offset=expected,
                )
            if header.last_offset >= offset:
                return position, header
            position += header.batch_length + LOG_OVERHEAD
            expected = header.next_offset
        return None

    def find_timestamp(self, timestamp_ms: int) -> tuple[int, BatchHeader] | None:
        """First batch whose max_timestamp >= ``timestamp_ms``."""
        relative = self.time_index.lookup(timestamp_ms)
        found = self.find_batch(self.base_offset + relative)
        if found is None:
            return None
        position = found[0]
        while position < self.size_bytes:
            header = self.header_at(position)
            if header.max_timestamp >= timestamp_ms:
                return position, header
            position += header.batch_length + LOG_OVERHEAD
        return None

    # ---- recovery and truncation -----------------------------------------------------------------

    def recover(
        self,
        *,
        from_offset: int | None,
        last_epoch: int = UNDEFINED_EPOCH,
        epoch_starts: list[tuple[int, int]] | None = None,
    ) -> RecoveryResult:
        """Check every batch from ``from_offset`` on, truncate at the first that fails, rebuild
        what the indexes lack.

        The scan starts at the index entry at or below ``from_offset`` (the batches before it
        are trusted: they lie below the log's recovery point); ``None``, or an index that fails
        its sanity check or points at no valid batch, means a full scan from byte 0 that
        rebuilds both indexes. Every batch scanned is checked (``recovery.walk_batches``): CRC,
        offsets contiguous from the segment's base offset, epochs never below ``last_epoch``.
        Where epochs rise is appended to ``epoch_starts`` when given.
        """
        if from_offset is not None and self.index.is_sane(self.size_bytes):
            rel, position = self.index.lookup(from_offset - self.base_offset)
            if (rel, position) != (0, 0) and self._is_valid_batch_at(
                position, self.base_offset + rel
            ):
                return self._scan_from(position, self.base_offset + rel, last_epoch, epoch_starts)
        return self._scan_from(0, None, last_epoch, epoch_starts)

    def _is_valid_batch_at(self, position: int, base_offset: int) -> bool:
        try:
            header = self.header_at(position)
            if header.base_offset != base_offset or position + header.size_bytes > self.size_bytes:
                return False
            return any(True for _ in iter_batches(self.pread(header.size_bytes, position)))
        except CorruptRecordError:
            return False

    def _scan_from(
        self,
        start: int,
        expected_offset: int | None,
        last_epoch: int,
        epoch_starts: list[tuple[int, int]] | None,
    ) -> RecoveryResult:
        """Scan batches from ``start`` (where ``expected_offset`` begins, None for byte 0)."""
        if expected_offset is None:  # a full scan from byte 0
            self.index.reset()
            self.time_index.reset()
            self.max_timestamp_ms = -1
            self._offset_of_max_timestamp = self.base_offset
            self._bytes_since_index_entry = self._index_interval_bytes
            expected_offset = self.base_offset
        else:
            # keep the entries up to and including the trusted one at ``start``
            self.index.truncate_entries(self.index.count_below_position(start + 1))
            self.time_index.truncate_entries(
                self.time_index.count_below_offset(expected_offset - self.base_offset + 1)
            )
            self._restore_time_state()
            self._bytes_since_index_entry = 0
        self.next_offset = expected_offset
        cursor = BatchCursor(start, expected_offset, last_epoch, epoch_starts)

        _, finding = walk_batches(
            self.pread, self.size_bytes, cursor, sys.maxsize, sink=self._note_header
        )
        position = cursor.position
        torn = finding is not None and finding.incomplete
        if torn and self.size_bytes - position >= HEADER_BYTES:
            header = read_header(self.pread(HEADER_BYTES, position))
            torn = not data_follows(self.pread, self.size_bytes, position, header)
        truncated = self.size_bytes - position
        if truncated:
            self._truncate_file(position)
        self.index.truncate_entries(self.index.count_below_position(position))
        self.time_index.truncate_entries(
            self.time_index.count_below_offset(self.next_offset - self.base_offset)
        )
        self.index.flush()
        self.time_index.flush()
        return RecoveryResult(self.next_offset, truncated, finding, torn, cursor.last_epoch)

    def _restore_time_state(self) -> None:
        """Max timestamp so far, from the time index, before rescanning a tail."""
        ts = self.time_index.last_timestamp()
        self.max_timestamp_ms = ts
        rel = 0
        if len(self.time_index) and ts >= 0:
            rel = self.time_index.lookup(ts + 1)
        self._offset_of_max_timestamp = self.base_offset + rel

    def load_closed(self) -> bool:
        """State of a closed segment below the recovery point without scanning it all: walk
        the headers from the last index entry. False when that walk does not end exactly at the
        end of the file with contiguous offsets (a cut or a bad header), or when an index is
        missing, empty or insane while the log holds batches (every non-empty segment indexes
        its first batch): scan it with ``recover``, which rebuilds both indexes. Without that, a
        lost ``.timeindex`` would leave the segment with no timestamp (never expired, skipped by
        timestamp lookups) and a lost ``.index`` would make every read scan from byte 0."""
        last = self.index.last() if self.index.is_sane(self.size_bytes) else None
        max_timestamp = self.time_index.last_timestamp()
        if self.size_bytes > 0 and (last is None or len(self.time_index) == 0):
            self.index.unload()
            self.time_index.unload()
            return False
        rel, position = last if last is not None else (0, 0)
        next_offset = self.base_offset + rel
        ok = True
        try:
            while position < self.size_bytes:
                header = self.header_at(position)
                if header.base_offset != next_offset:
                    ok = False
                    break
                next_offset = header.next_offset
                # a roll appends the final time entry, but a lost index write (a full disk)
                # drops it: the batches walked past the last index entry count too
                max_timestamp = max(max_timestamp, header.max_timestamp)
                position += header.size_bytes
        except CorruptRecordError:
            ok = False
        self.next_offset = next_offset
        self.max_timestamp_ms = max_timestamp
        self.index.unload()
        self.time_index.unload()
        return ok and position == self.size_bytes

    def truncate_to(self, offset: int) -> int:
        """Remove every batch with last_offset >= ``offset``; return the new next_offset.

        A batch is never split: if ``offset`` falls inside one, the whole batch goes and the
        segment ends at that batch's base offset.
        """
        found = self.find_batch(offset)
        if found is None:
            return self.next_offset
        position, header = found
        self._truncate_file(position)
        self.index.truncate_entries(self.index.count_below_position(position))
        self.time_index.truncate_entries(
            self.time_index.count_below_offset(header.base_offset - self.base_offset)
        )
        self.next_offset = header.base_offset
        # recompute max timestamp and the index cadence from what is left
        self.recover(from_offset=self.next_offset)
        return self.next_offset

    def _truncate_file(self, position: int) -> None:
        try:
            os.ftruncate(self._fd, position)
        except OSError as exc:
            raise StorageIOError(f"cannot truncate {self.path}: {exc}") from exc
        self.size_bytes = position
        self.unflushed = True

    # ---- lifecycle -----------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> None:
        """fsync the log, then the indexes (an index never points past durable data).
        ``force``: fsync the log even if no write is known to be pending (its background
        fsync may not have run yet)."""
        try:
            if self.unflushed or force:
                os.fsync(self._fd)
                self.unflushed = False
            self.index.fsync()
            self.time_index.fsync()
        except OSError as exc:
            raise StorageIOError(f"fsync of {self.path} failed: {exc}") from exc

    def durable_later(self) -> Callable[[], None]:
        """Write the buffered index entries now; return the fsyncs as a function to run on
        another thread. It owns a duplicate of the file descriptor (closed when it has run), so
        the segment may be closed or deleted meanwhile without it touching another file."""
        self.index.flush()
        self.time_index.flush()
        try:
            fd = os.dup(self._fd)
        except OSError as exc:
            raise StorageIOError(f"cannot duplicate the descriptor of {self.path}: {exc}") from exc
        paths = (self.index.path, self.time_index.path)
        self.unflushed = False

        def fsync_all() -> None:
            try:
                os.fsync(fd)
                for path in paths:
                    if os.path.exists(path):
                        index_fd = os.open(path, os.O_RDONLY)
                        try:
                            os.fsync(index_fd)
                        finally:
                            os.close(index_fd)
            except OSError as exc:  # the segment may have been deleted meanwhile
                raise StorageIOError(f"background fsync of {self.path} failed: {exc}") from exc
            finally:
                os.close(fd)

        return fsync_all

    def file_problem(self) -> str | None:
        """Whether the segment's file is still in the directory: a segment deleted or replaced
        while open stays readable through the descriptor but is lost at the next open (a cut
        file is found by reading it)."""
        try:
            on_disk = os.stat(self.path)
            mine = os.fstat(self._fd)
        except FileNotFoundError:
            return f"{self.path} is gone from the directory"
        except OSError as exc:
            return f"cannot stat {self.path}: {exc}"
        if (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev):
            return f"{self.path} was replaced by another file"
        return None

    def dup_fd(self) -> int:
        """A duplicate of the file's descriptor, for a reader on another thread (the cleaner)
        that must not care whether this segment is closed or replaced meanwhile."""
        try:
            return os.dup(self._fd)
        except OSError as exc:
            raise StorageIOError(f"cannot duplicate the descriptor of {self.path}: {exc}") from exc

    def detach(self) -> None:
        """Close the descriptor only: a cleaned copy has taken the segment's file names, so
        nothing may be written through this object's paths any more."""
        self.index.discard_pending()
        self.time_index.discard_pending()
        os.close(self._fd)

    def close(self) -> None:
        self.index.flush()
        self.time_index.flush()
        os.close(self._fd)

    def delete(self) -> None:
        os.close(self._fd)
        os.unlink(self.path)
        self.index.delete()
        self.time_index.delete()
