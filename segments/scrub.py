"""Checking a whole log for latent damage: the incremental scrub and the all-at-once verify.

Opening a log checks only what its recovery point does not cover; bytes below it can still rot
(a bad sector, a flipped bit). ``Scrubber.scrub`` reads a bounded number of bytes per call and
remembers where it stopped, so a broker can check every closed segment in the background a
little at a time; ``verify_segments`` checks every segment at once (the ``raftlog storage
verify`` tool, tests). Both walk batches with ``recovery.py``'s ``walk_batches`` (CRC, offsets
contiguous within and between segments, each batch's epoch against the epoch cache) and check
that each segment's file is still in the directory. Neither changes the log: the caller
truncates and refetches.

A ``Scrubber`` is owned by one ``Log`` and called under its partition lock; not thread-safe.
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from collections.abc import Callable, Sequence

from .batch import HEADER_BYTES
from .recovery import BatchCursor, ScrubResult, walk_batches
from .segment import Segment

__all__ = ["Scrubber", "verify_segments"]

EpochFor = Callable[[int], int]  # offset -> the leader epoch the epoch cache gives it


class Scrubber:
    """Where the scrub of one log continues between calls. See the module docstring."""

    def __init__(self) -> None:
        self._base = -1  # segment the scrub continues in (-1: start at the first)
        self._cursor: BatchCursor | None = None

    def forget(self, base_offset: int) -> None:
        """The segment at ``base_offset`` was replaced (a cleaned copy): a cursor inside it
        points at positions of the old file, so that segment is scrubbed again from byte 0."""
        if self._base == base_offset:
            self._cursor = None

    def scrub(
        self,
        segments: Sequence[Segment],
        bases: Sequence[int],
        max_bytes: int,
        *,
        epoch_for: EpochFor,
        log_start_offset: int,
    ) -> ScrubResult:
        """Check closed segments a little at a time, from where the previous call stopped.

        Reads at most ``max_bytes`` (at least one batch header). Wraps around to the first
        segment after the last closed one, and visits each closed segment at most once a call.
        On damage it reports the first bad offset and moves on to the next segment (so a damage
        nobody repairs is reported again once a round, and the rest of the log is still
        checked). ``bases`` are the segments' base offsets, in order.
        """
        closed = segments[:-1]
        if not closed:
            self._base, self._cursor = -1, None
            return ScrubResult(0, None, (segments[-1].base_offset, 0))
        i = bisect_right(bases, self._base) - 1
        if i < 0 or i >= len(closed) or bases[i] != self._base:
            i = i + 1 if 0 <= i + 1 < len(closed) else 0  # the segment went: the next one
            self._cursor = None
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
            cursor = self._cursor
            if cursor is None or self._base != segment.base_offset:
                cursor = BatchCursor(0, segment.base_offset)
                self._base, self._cursor = segment.base_offset, cursor
                if segment.file_problem() is not None:
                    damaged = segment.base_offset
            if damaged is None:
                read, finding = walk_batches(
                    segment.pread,
                    segment.size_bytes,
                    cursor,
                    max_bytes - checked,
                    epoch_for=epoch_for,
                    log_start_offset=log_start_offset,
                )
                checked += read
                if finding is not None:
                    damaged = finding.offset
                elif cursor.position >= segment.size_bytes:
                    following = segments[i + 1].base_offset
                    if cursor.expected_offset != following:
                        damaged = min(cursor.expected_offset, following)
                else:
                    break  # the budget is spent inside this segment
            # the segment is done (or damaged): the next call starts at the next one
            i = i + 1 if i + 1 < len(closed) else 0
            visited += 1
            self._base, self._cursor = closed[i].base_offset, None
        cursor = self._cursor
        return ScrubResult(
            checked, damaged, (self._base, cursor.position if cursor is not None else 0)
        )


def verify_segments(
    segments: Sequence[Segment],
    log_end_offset: int,
    *,
    epoch_for: EpochFor,
    log_start_offset: int,
) -> tuple[int, str] | None:
    """Check every batch of every segment now: (first damaged offset, why), or None."""
    for i, segment in enumerate(segments):
        problem = segment.file_problem()
        if problem is not None:
            return segment.base_offset, problem
        cursor = BatchCursor(0, segment.base_offset)
        _, finding = walk_batches(
            segment.pread,
            segment.size_bytes,
            cursor,
            sys.maxsize,
            epoch_for=epoch_for,
            log_start_offset=log_start_offset,
        )
        if finding is not None:
            return finding.offset, f"{segment.path}: {finding.reason}"
        end = segments[i + 1].base_offset if i + 1 < len(segments) else log_end_offset
        if cursor.expected_offset != end:
            return (
                min(cursor.expected_offset, end),
                f"{segment.path} ends at offset {cursor.expected_offset}, the log goes on at {end}",
            )
    return None
