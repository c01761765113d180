"""Opening a log (Kafka's ``LogLoader``): find its segments, check them, cut the damage, and
rebuild the leader-epoch cache.

Segments wholly below the recovery point are durable and opened cheaply (their indexes are
trusted), but offsets must still run on from one segment to the next. From the segment holding
the recovery point to the end every batch is checked (CRC, contiguous offsets within and between
segments, epochs that never go down), and the log is truncated at the first damage. What was
cut comes back as a ``RecoveryReport``: damage (the replica may have lost acknowledged data) or
only a torn tail (what a crash mid-append leaves). The checks themselves are ``recovery.py``'s
walk, run by ``Segment.recover``.

Called by ``Log.__init__`` on the opening thread, before the log is shared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .batch import BatchHeader, iter_batches
from .epochs import UNDEFINED_EPOCH, EpochEntry, LeaderEpochCache
from .errors import CorruptRecordError
from .recovery import CLEAN, RecoveryReport
from .recovery_point import RecoveryPoint
from .segment import Segment, segment_file_name

__all__ = ["LoadedSegments", "load_epoch_cache", "load_segments"]

_SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)$")


@dataclass(slots=True)
class LoadedSegments:
    """What opening found: the segments to use and what the epoch cache needs."""

    segments: list[Segment]  # sorted by base offset, offsets running on; the last is active
    recovery: RecoveryReport  # what the open found and cut
    recovery_point: int  # the saved point, or the log end when that is lower
    point_changed: bool  # it differs from the saved one: persist it
    epoch_starts: list[tuple[int, int]]  # (epoch, base offset) where epochs rose in the scan
    covered_all: bool  # the scan started at byte 0 of the first segment


def load_segments(
    directory: str,
    new_segment: Callable[[int], Segment],
    durability: RecoveryPoint,
    saved_point: int | None,
    saved_epochs: list[EpochEntry] | None,
) -> LoadedSegments:
    """Open every segment in ``directory``, check what the recovery point does not cover, cut
    the damage. ``new_segment(base_offset)`` opens (or creates) one segment's files."""
    names: dict[int, set[str]] = {}
    for entry in os.listdir(directory):
        match = _SEGMENT_NAME.match(entry)
        if match:
            names.setdefault(int(match.group(1)), set()).add(match.group(2))
    segments: list[Segment] = []
    for base in sorted(names):
        if "log" not in names[base]:  # an index left behind by an interrupted delete
            for suffix in names[base]:
                os.unlink(os.path.join(directory, segment_file_name(base, "." + suffix)))
            continue
        segments.append(new_segment(base))
    if not segments:
        segments.append(new_segment(0))
        durability.directory_changed()
        return LoadedSegments(segments, CLEAN, 0, False, [], covered_all=True)
    point = max(saved_point or 0, 0)
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
        found = _check_next_base(segments, k)
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
                found = _check_next_base(segments, i - 1)
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
            durability.directory_changed()
        del segments[cut_after + 1 :]
        # a closed segment is the active one again: its appending state from its index
        segments[-1].recover(from_offset=segments[-1].next_offset)
        durability.sync_directory()
    end = segments[-1].next_offset
    if damage is None and end < point:
        damage = (end, f"the log ends at {end}, below its recovery point {point}")
    recovery = CLEAN
    if damage is not None:
        recovery = RecoveryReport(truncated, True, damage[0], damage[1])
    elif truncated:
        recovery = RecoveryReport(truncated, False, None, torn or "torn tail cut")
    # the bytes just checked above the old recovery point may still be only in the page
    # cache: the point stays where it was (lower, when the log now ends below it)
    recovery_point = min(point, end)
    changed = saved_point is not None and recovery_point != saved_point
    return LoadedSegments(segments, recovery, recovery_point, changed, epoch_starts, covered_all)


def _check_next_base(segments: list[Segment], i: int) -> tuple[tuple[int, str], int] | None:
    """Offsets run on from segment ``i`` to ``i + 1``; if not, cut ``i`` where they stop.
    Returns ((first bad offset, why), bytes cut from segment ``i``) or None."""
    segment, following = segments[i], segments[i + 1]
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


def load_epoch_cache(
    saved: list[EpochEntry] | None,
    loaded: LoadedSegments,
    log_start_offset: int,
    log_end_offset: int,
) -> tuple[LeaderEpochCache, bool]:
    """The leader-epoch cache of the opened log, and whether it differs from the saved one
    (then the caller saves it)."""
    if saved is None:
        cache = LeaderEpochCache()
        if loaded.covered_all:  # the open already read every header
            for epoch, base_offset in loaded.epoch_starts:
                cache.assign(epoch, base_offset)
            if log_start_offset >= log_end_offset:
                cache.clear()  # every batch lies below the start
        else:
            for header in _iter_all_headers(loaded.segments):
                # below the start is gone; an epoch that goes backwards is a corrupt header
                # (epochs are outside the CRC) and its batch will fail the read-side check
                if (
                    header.next_offset > log_start_offset
                    and header.leader_epoch >= cache.latest_epoch
                ):
                    cache.assign(header.leader_epoch, header.base_offset)
        changed = True
    else:
        cache = LeaderEpochCache(saved)
        changed = False
        # the scanned tail is the truth above the recovery point: a crash between an append
        # and the cache's save leaves the saved cache one epoch behind the data
        for epoch, base_offset in loaded.epoch_starts:
            entries = cache.entries
            if epoch > cache.latest_epoch and (
                not entries or base_offset >= entries[-1].start_offset
            ):
                changed |= cache.assign(epoch, base_offset)
    changed |= cache.truncate_from_end(log_end_offset)
    changed |= cache.truncate_from_start(log_start_offset)
    return cache, changed


def _iter_all_headers(segments: list[Segment]) -> Iterator[BatchHeader]:
    """Every batch header, segment by segment; a segment's scan stops at corruption
    (reads of those batches fail their own checks)."""
    for segment in segments:
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
