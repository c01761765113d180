"""Reading a log's segments: whole batches from an offset (what a fetch returns), and batch
headers from an offset (what rebuilding state, such as producer ids, reads).

Both find the batch holding an offset through the segments' sparse indexes, then ``pread`` whole
batches from there. Neither skips what it cannot read: a missing offset, a header that lies
about its size, a gap or an overlap between segments raise ``CorruptRecordError`` naming the
offset where the data stops making sense (never "nothing" for an offset below the end, or a
reader would spin on it forever). ``read_batches`` checks every batch it returns (CRC, contiguous
offsets, each epoch against the epoch cache, since base offset and epoch are stamped outside the
CRC); ``iter_headers_from`` checks offsets only.

Called by ``Log`` under its partition lock, over its segments in base-offset order (``bases``
are their base offsets, for bisect); not thread-safe.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence

from .batch import BatchHeader, iter_batches
from .errors import CorruptRecordError
from .segment import Segment

__all__ = ["iter_headers_from", "read_batches"]


def read_batches(
    segments: Sequence[Segment],
    bases: Sequence[int],
    offset: int,
    max_bytes: int,
    end: int,
    *,
    epoch_for: Callable[[int], int],
    log_start_offset: int,
    name: str,
    touch: Callable[[Segment], None],
) -> tuple[bytes, int]:
    """(whole batches from the one holding ``offset``, the offset after the last of them);
    ``(b"", offset)`` when the batch holding ``offset`` reaches ``end`` (the high watermark).

    ``log_start_offset <= offset < end <= the log end offset``. Returns at least one batch, even
    one larger than ``max_bytes``, and never one reaching ``end``. ``epoch_for`` is the epoch
    cache's; ``touch(segment)`` is called on each segment whose index was used.
    """
    i = max(bisect_right(bases, offset) - 1, 0)
    found = None
    while i < len(segments):
        segment = segments[i]
        found = segment.find_batch(offset)
        touch(segment)
        if found is not None:
            break
        i += 1
    if found is None:
        # offset < end <= LEO, so some batch holds it: a header on the way lied about its size
        raise CorruptRecordError(f"no batch holds offset {offset} in {name}", offset=offset)
    position, header = found
    if header.base_offset > offset:  # never skip the missing offsets: name them
        raise CorruptRecordError(
            f"no batch holds offset {offset} in {name}: the next one starts at "
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
            epoch = epoch_for(max(h.base_offset, log_start_offset))
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
            return b"", offset
        # the header claimed more bytes than the segment holds: never return "nothing" for
        # an offset below the end, or a reader would spin on it forever
        raise CorruptRecordError(
            f"batch at byte {position} of {segment.path} runs past the segment's end",
            offset=header.base_offset,
        )
    return chunk[:cut], next_offset


def iter_headers_from(
    segments: Sequence[Segment], bases: Sequence[int], start_offset: int, *, name: str
) -> Iterator[BatchHeader]:
    """Headers of the batches holding ``start_offset`` and after, in order (no CRC checks).

    ``start_offset`` is at or above the log start and below the log end. Offsets must run on
    from batch to batch and segment to segment: a bad header or a gap raises
    ``CorruptRecordError`` with ``offset`` where the headers stop making sense."""
    i = max(bisect_right(bases, start_offset) - 1, 0)
    expected: int | None = None  # the offset the next header must have
    for segment in segments[i:]:
        position = 0
        if expected is None:
            found = segment.find_batch(start_offset)
            if found is None:
                expected = segment.next_offset  # the offset lies after this segment
                continue
            position, first = found
            if first.base_offset > start_offset:
                raise CorruptRecordError(
                    f"no batch holds offset {start_offset} in {name}: the next one "
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
