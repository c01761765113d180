"""Sparse offset and time indexes of one segment.

Owned by the segment that holds them; not thread-safe (the partition lock serialises access).

Both files are *rebuildable* and carry no checksum: they are derived from the log and are
rebuilt by scanning the segment whenever they are missing or fail a sanity check.

``<base_offset:020d>.index`` — 8 bytes an entry, big-endian::

    relative_offset:uint32  position:uint32

An entry is added once every ``index_interval_bytes`` of appended batches and points at the
start of a batch. Worked example: in segment ``00000000000000000050.log`` the batch holding
offsets 55..57 starts at byte 4096; its entry is ``(5, 4096)``. To read offset 56, find the
greatest entry with relative offset <= 6, i.e. ``(5, 4096)``, and scan batches from byte 4096.

``<base_offset:020d>.timeindex`` — 12 bytes an entry::

    max_timestamp_ms:int64  relative_offset:uint32

Entries are added with the offset entries, and only when the batch's max timestamp is greater
than the last entry's, so timestamps strictly increase along the file.

Memory: entries of a loaded index live in two ``array``s (8–12 bytes an entry). The log keeps the
indexes of only a bounded number of closed segments loaded and unloads the rest.
"""

from __future__ import annotations

import contextlib
import os
import struct
from array import array
from bisect import bisect_right

__all__ = ["IndexBuilder", "OffsetIndex", "TimeIndex"]

_OFFSET_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")
_PENDING_ENTRIES_MAX = 64  # entries buffered before one write; a crash loses only these


class _Index:
    """Common machinery: file of fixed-size entries, in-memory arrays, buffered appends."""

    _entry: struct.Struct

    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: array[int] = array("q")
        self._values: array[int] = array("q")
        self._pending = bytearray()
        self._pending_count = 0
        self._loaded = False
        self.write_failures = 0  # index writes lost to disk errors (harmless: see flush)

    # ---- loading -----------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._keys = array("q")
        self._values = array("q")
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        usable = len(data) - len(data) % self._entry.size
        for key, value in self._entry.iter_unpack(data[:usable]):
            self._append_mem(key, value)
        self._loaded = True

    def _append_mem(self, key: int, value: int) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        """Drop the in-memory entries (after flushing); they are reloaded on next use."""
        self.flush()
        self._keys = array("q")
        self._values = array("q")
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._keys)

    # ---- writing -----------------------------------------------------------------------------

    def _append_entry(self, a: int, b: int) -> None:
        self._ensure_loaded()
        self._pending += self._entry.pack(a, b)
        self._pending_count += 1
        if self._pending_count >= _PENDING_ENTRIES_MAX:
            self.flush()

    def flush(self) -> None:
        """Write buffered entries to the file (no fsync).

        An index is rebuildable and sparse, so a failed write (a full disk) only costs entries:
        the in-memory lookups keep them, and recovery scans a little more. It is counted, not
        raised — losing an index entry must never fail an append or a close.
        """
        if self._pending:
            try:
                with open(self.path, "ab") as f:
                    f.write(self._pending)
            except OSError:
                self.write_failures += 1
                # a partial entry would shift every later one: cut the file back to whole entries
                self._trim_partial_entry()
            self._pending.clear()
            self._pending_count = 0

    def _trim_partial_entry(self) -> None:
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "r+b") as f:
                f.truncate(size - size % self._entry.size)
        except OSError:
            pass  # is_sane() and the full-scan fallback cover what is left

    def fsync(self) -> None:
        self.flush()
        if os.path.exists(self.path):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def truncate_entries(self, count: int) -> None:
        """Keep the first ``count`` entries."""
        self._ensure_loaded()
        if count >= len(self._keys):
            return
        self.flush()
        del self._keys[count:]
        del self._values[count:]
        with open(self.path, "r+b") as f:
            f.truncate(count * self._entry.size)

    def reset(self) -> None:
        """Remove every entry (before a rebuild)."""
        self._pending.clear()
        self._pending_count = 0
        self._keys = array("q")
        self._values = array("q")
        self._loaded = True
        with open(self.path, "wb"):
            pass

    def discard_pending(self) -> None:
        """Forget buffered entries without writing them (the file was replaced)."""
        self._pending.clear()
        self._pending_count = 0

    def delete(self) -> None:
        self._pending.clear()
        self._pending_count = 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class OffsetIndex(_Index):
    """Relative offset → file position of a batch start."""

    _entry = _OFFSET_ENTRY

    def _append_mem(self, key: int, value: int) -> None:
        self._keys.append(key)
        self._values.append(value)

    def append(self, relative_offset: int, position: int) -> None:
        # entries strictly increase in both fields; callers guarantee it
        self._append_entry(relative_offset, position)
        self._keys.append(relative_offset)
        self._values.append(position)

    def lookup(self, relative_offset: int) -> tuple[int, int]:
        """Greatest entry with key <= relative_offset, or (0, 0) when there is none."""
        self._ensure_loaded()
        i = bisect_right(self._keys, relative_offset)
        if i == 0:
            return 0, 0
        return self._keys[i - 1], self._values[i - 1]

    def last(self) -> tuple[int, int] | None:
        self._ensure_loaded()
        if not self._keys:
            return None
        return self._keys[-1], self._values[-1]

    def count_below_position(self, position: int) -> int:
        """Number of entries pointing strictly before ``position``."""
        self._ensure_loaded()
        return bisect_right(self._values, position - 1)

    def is_sane(self, segment_bytes: int) -> bool:
        """Entries strictly increase and point inside the segment."""
        self._ensure_loaded()
        keys, values = self._keys, self._values
        if not keys:
            return True
        if values[-1] >= segment_bytes or keys[0] < 0 or values[0] < 0:
            return False
        return all(
            keys[i] < keys[i + 1] and values[i] < values[i + 1] for i in range(len(keys) - 1)
        )


class TimeIndex(_Index):
    """Max timestamp → relative offset of the batch that reached it."""

    _entry = _TIME_ENTRY

    def _append_mem(self, key: int, value: int) -> None:
        self._keys.append(key)
        self._values.append(value)

    def maybe_append(self, timestamp_ms: int, relative_offset: int) -> None:
        self._ensure_loaded()
        if self._keys and timestamp_ms <= self._keys[-1]:
            return
        self._append_entry(timestamp_ms, relative_offset)
        self._keys.append(timestamp_ms)
        self._values.append(relative_offset)

    def lookup(self, timestamp_ms: int) -> int:
        """Relative offset to start scanning from for the first batch with max_ts >= timestamp.

        That is the offset of the greatest entry whose timestamp is < ``timestamp_ms`` (every
        batch before it has a smaller max timestamp), or 0.
        """
        self._ensure_loaded()
        i = bisect_right(self._keys, timestamp_ms - 1)
        if i == 0:
            return 0
        return self._values[i - 1]

    def last_timestamp(self) -> int:
        self._ensure_loaded()
        return self._keys[-1] if self._keys else -1

    def count_below_offset(self, relative_offset: int) -> int:
        self._ensure_loaded()
        return bisect_right(self._values, relative_offset - 1)


class IndexBuilder:
    """Both index files of a segment written whole, for a segment the cleaner rewrites
    (``compaction.py``): the entries ``Segment`` appends as batches arrive (an offset entry for
    the first batch and then once every ``index_interval_bytes``, a time entry with it when the
    max timestamp grew) plus the time entry a roll adds for the segment's last offset. Pure."""

    def __init__(self, base_offset: int, index_interval_bytes: int) -> None:
        self.base_offset = base_offset
        self._interval = index_interval_bytes
        self._since_entry = index_interval_bytes  # the first batch is always indexed
        self._offsets = bytearray()
        self._times = bytearray()
        self._last_time = -1
        self._has_time = False
        self.max_timestamp_ms = -1
        self._offset_of_max = base_offset

    def _time_entry(self, timestamp_ms: int, relative_offset: int) -> None:
        if self._has_time and timestamp_ms <= self._last_time:
            return
        self._times += _TIME_ENTRY.pack(timestamp_ms, relative_offset)
        self._last_time = timestamp_ms
        self._has_time = True

    def add(self, base_offset: int, position: int, size: int, max_timestamp_ms: int) -> None:
        if max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = max_timestamp_ms
            self._offset_of_max = base_offset
        if self._since_entry >= self._interval:
            self._offsets += _OFFSET_ENTRY.pack(base_offset - self.base_offset, position)
            self._time_entry(self.max_timestamp_ms, self._offset_of_max - self.base_offset)
            self._since_entry = 0
        self._since_entry += size

    def finish(self, next_offset: int) -> tuple[bytes, bytes]:
        """(offset index bytes, time index bytes) of the segment, which ends at ``next_offset``."""
        if next_offset > self.base_offset:
            self._time_entry(self.max_timestamp_ms, next_offset - 1 - self.base_offset)
        return bytes(self._offsets), bytes(self._times)
