"""The leader-epoch cache of one partition: which leader epoch started at which offset.

Pure: no IO. Owned by the partition's ``Log``; not thread-safe.

This is what makes follower truncation safe (KIP-101/279, DESIGN.md invariant 4): a follower asks
the leader "where does my latest epoch end in *your* log?" and truncates there, instead of
trusting its own high watermark. Entries ``(epoch, start_offset)`` strictly increase in both
fields. Worked example: entries ``[(0, 0), (2, 120), (5, 300)]`` with log end offset 410 mean
offsets 0..119 were written in epoch 0, 120..299 in epoch 2 and 300..409 in epoch 5;
``end_offset_for(2) == (2, 300)``, ``end_offset_for(3) == (2, 300)`` (3 never led: answer with
the greatest epoch below it), ``end_offset_for(5) == (5, 410)``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["UNDEFINED_EPOCH", "UNDEFINED_OFFSET", "EpochEntry", "LeaderEpochCache"]

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class EpochRegressionError(Exception):
    """An assignment that would make epochs or offsets go backwards: a programming error."""


class LeaderEpochCache:
    """Ordered (epoch, start_offset) entries; both fields strictly increase."""

    def __init__(self, entries: list[EpochEntry] | None = None) -> None:
        self._entries: list[EpochEntry] = []
        self._starts: list[int] = []  # the entries' start offsets, for bisect
        self._set(list(entries or []))

    def _set(self, entries: list[EpochEntry]) -> None:
        self._entries = entries
        self._starts = [e.start_offset for e in entries]

    @property
    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; True when the cache changed."""
        if epoch < 0:
            return False
        if self._entries:
            last = self._entries[-1]
            if epoch == last.epoch:
                return False
            if epoch < last.epoch:
                raise EpochRegressionError(
                    f"epoch {epoch} at offset {start_offset} is below the latest epoch {last.epoch}"
                )
            if start_offset < last.start_offset:
                raise EpochRegressionError(
                    f"epoch {epoch} starts at {start_offset}, before epoch {last.epoch} "
                    f"(which starts at {last.start_offset})"
                )
            if start_offset == last.start_offset:
                # the older epoch wrote nothing: it never owned an offset
                self._entries.pop()
        self._set([*self._entries, EpochEntry(epoch, start_offset)])
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(greatest epoch <= ``epoch``, the offset where it ends) — OffsetForLeaderEpoch.

        UNDEFINED for both when ``epoch`` is older than anything cached.
        """
        if not self._entries or epoch < self._entries[0].epoch:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        for i in range(len(self._entries) - 1, -1, -1):
            entry = self._entries[i]
            if entry.epoch <= epoch:
                if i == len(self._entries) - 1:
                    return entry.epoch, log_end_offset
                return entry.epoch, self._entries[i + 1].start_offset
        return UNDEFINED_EPOCH, UNDEFINED_OFFSET  # unreachable: first entry's epoch <= epoch

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch that wrote ``offset``, or UNDEFINED_EPOCH (on every read: a bisect)."""
        i = bisect_right(self._starts, offset)
        return self._entries[i - 1].epoch if i else UNDEFINED_EPOCH

    def truncate_from_end(self, end_offset: int) -> bool:
        """Forget epochs starting at or after ``end_offset`` (the log was truncated there)."""
        keep = [e for e in self._entries if e.start_offset < end_offset]
        changed = len(keep) != len(self._entries)
        self._set(keep)
        return changed

    def truncate_from_start(self, start_offset: int) -> bool:
        """Forget what lies before ``start_offset`` (retention moved the log start)."""
        if not self._entries or self._entries[0].start_offset >= start_offset:
            return False
        # the last entry that starts at or before the new start now starts exactly there
        i = 0
        while i + 1 < len(self._entries) and self._entries[i + 1].start_offset <= start_offset:
            i += 1
        kept = self._entries[i]
        self._set([EpochEntry(kept.epoch, start_offset), *self._entries[i + 1 :]])
        return True

    def clear(self) -> None:
        self._set([])
