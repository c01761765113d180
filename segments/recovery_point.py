"""A log's recovery point: the offset below which every byte is known fsynced.

"Known fsynced" covers the segment files' data and their names: the log directory is fsynced
after a segment file is created or deleted (and, once after open, its parent, for the log
directory's own entry). The point moves only after the fsyncs it stands for completed —
``flushed`` (a whole-log flush), ``advance`` (a roll whose fsync ran inline) and a background
roll fsync completing, in roll order: a later roll's fsync finishing first does not move it —
and is persisted through ``persist`` (the broker's state store) after that. Before bytes change
(truncation) it is lowered first, on disk too (``lower``).

Owned by one ``Log`` (its partition lock); one exception: a rolled segment's background fsync
reports its completion from another thread, and ``_lock`` guards exactly what that touches (the
point, the pending fsyncs, the directory-sync mark). Nothing here is read back from disk: the
saved point comes in through ``start_at`` when the log opens.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from .durable import fsync_directory
from .segment import Segment

__all__ = ["RecoveryPoint"]


@dataclass(slots=True)
class _PendingSync:
    """A rolled segment whose fsync runs in the background; until it completes (and every
    earlier one has), the recovery point stays below ``next_offset``."""

    segment: Segment
    next_offset: int  # the recovery point this fsync (with the ones before it) allows
    done: bool = False


class RecoveryPoint:
    """See the module docstring."""

    def __init__(self, directory: str, persist: Callable[[int], None]) -> None:
        self.directory = directory
        self._persist = persist  # saves the point (the broker's state store), or does nothing
        self._lock = threading.Lock()
        self._point = 0  # 0 <= point <= LEO; guarded by _lock
        self._pending: list[_PendingSync] = []  # in roll order; guarded by _lock
        # segment files created or deleted, and how many of those the last directory fsync
        # covered; after a crash nothing is known, so the first sync covers the directory
        self._dir_changes = 1
        self._dir_synced = 0  # guarded by _lock
        self._parent_synced = False  # the log directory's own entry in its parent

    @property
    def value(self) -> int:
        with self._lock:
            return self._point

    def start_at(self, point: int, *, persist: bool) -> None:
        """The point the open established (``persist``: it differs from the saved one)."""
        with self._lock:
            self._point = point
        if persist:
            self._persist(point)

    # ---- the directory -------------------------------------------------------------------------

    def directory_changed(self) -> None:
        """A segment file was created or deleted (on the owner's thread)."""
        self._dir_changes += 1

    def sync_directory(self) -> None:
        """fsync the directory if segment files were created or deleted since the last time."""
        changes = self._dir_changes
        with self._lock:
            if self._dir_synced >= changes and self._parent_synced:
                return
        for directory in self._directories_to_sync():
            fsync_directory(directory)
        with self._lock:
            self._dir_synced = max(self._dir_synced, changes)

    def _directories_to_sync(self) -> list[str]:
        if self._parent_synced:
            return [self.directory]
        self._parent_synced = True  # the first sync after open also makes our own entry durable
        parent = os.path.dirname(os.path.abspath(self.directory))
        return [self.directory, parent]

    # ---- rolls -----------------------------------------------------------------------------------

    def advance(self, offset: int) -> None:
        """On the owner's thread, after the fsyncs that make everything below ``offset``
        durable (data, and directory entries) completed."""
        with self._lock:
            if offset > self._point and not self._pending:
                self._point = offset
                self._persist(offset)

    def fsync_later(self, rolled: Segment) -> Callable[[], None]:
        """The fsync of a segment just rolled (and of the directory holding the new one), for
        another thread to run; the point waits for it, and for every earlier one."""
        pending = _PendingSync(rolled, rolled.next_offset)
        with self._lock:
            self._pending.append(pending)
        fsync_segment = rolled.durable_later()
        changes = self._dir_changes  # the new segment's file is among them
        directories = self._directories_to_sync()

        def durable() -> None:
            fsync_segment()
            for directory in directories:
                fsync_directory(directory)
            self._synced_in_background(pending, changes)

        return durable

    def _synced_in_background(self, pending: _PendingSync, dir_changes: int) -> None:
        """A rolled segment's fsync completed (on the background thread)."""
        with self._lock:
            self._dir_synced = max(self._dir_synced, dir_changes)
            if not any(p is pending for p in self._pending):
                return  # a flush covered it, or a truncation made it moot
            pending.done = True
            point = None
            while self._pending and self._pending[0].done:
                point = self._pending.pop(0).next_offset
            if point is not None and point > self._point:
                self._point = point
                # a store that is closing keeps the lower saved point, which is safe
                with contextlib.suppress(lmdb.Error):
                    self._persist(point)

    def waiting_segments(self) -> set[int]:
        """``id`` of each segment whose background fsync has not completed."""
        with self._lock:
            return {id(p.segment) for p in self._pending}

    # ---- flushes and truncations -----------------------------------------------------------

    def flushed(self, offset: int) -> None:
        """Every segment and the directory were fsynced: the point is ``offset`` (the LEO)."""
        with self._lock:
            self._pending.clear()  # covered: their late completions change nothing
            if offset != self._point:
                self._point = offset
                self._persist(offset)

    def lower(self, offset: int) -> None:
        """Before the bytes at ``offset`` and after change (truncation): from now on only
        what lies below ``offset`` may count as durable, on disk first."""
        with self._lock:
            self._pending = [p for p in self._pending if p.next_offset <= offset]
            if offset < self._point:
                self._point = offset
                self._persist(offset)

    def restart_at(self, offset: int) -> None:
        """The log was emptied and continues at ``offset``, its directory synced: nothing lies
        below the point, so it is ``offset``."""
        with self._lock:
            self._pending.clear()
            self._point = offset
            self._persist(offset)
