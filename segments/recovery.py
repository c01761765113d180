"""Checking stored batches: the one walk behind recovery at open, the scrub and ``verify``.

Owned by whoever holds the bytes being walked (a ``Segment`` under its log's partition lock, or
the ``raftlog storage verify`` tool over files nobody has open); not thread-safe. No state here
survives a call except the ``BatchCursor`` the caller keeps.

What a walk checks, batch by batch, from a cursor to the end of a segment's bytes:

* the header: magic 2, a batch length of at least a header, the fields ``batch.py`` checks;
* contiguity: each batch starts exactly at the offset after the previous one (``base_offset`` is
  stamped outside the CRC, so this is what catches a flipped bit in it — and a segment cut at a
  batch boundary, which leaves a *gap* that no CRC can see);
* the CRC-32C over bytes [21, end) of the batch;
* leader epochs never go down (also outside the CRC), and, when the caller passes the epoch
  cache, each batch's epoch is the one the cache gives for its offset.

Worked example: segment ``00000000000000000100.log`` holds batches 100..102 (82 bytes) and
103..104 (75 bytes). A cursor ``(position=0, expected_offset=100)`` walks both and ends at
``(157, 105)``. If the file were cut at byte 157 of a log whose next segment is
``00000000000000000108.log``, the walk still ends cleanly at ``(157, 105)`` and it is the caller's
cross-segment check (next base 108 != 105) that names offset 105, where the gap starts.

A walk reads at most its byte budget (or one header, if the budget is smaller), so a scrub can
bound its IO per call; a batch larger than the budget is CRC'd across calls (the cursor carries
the partial CRC).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c as _crc32c

from .batch import (
    CRC_START,
    HEADER_BYTES,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    _check_fields,
    read_header,
)
from .epochs import UNDEFINED_EPOCH
from .errors import InvalidRecordError, StorageIOError

__all__ = [
    "BatchCursor",
    "DirectoryVerdict",
    "Finding",
    "RecoveryReport",
    "ScrubResult",
    "verify_directory",
    "walk_batches",
]

_CHUNK_BYTES = 8 << 20  # one pread; recovery of a 1 GiB segment is 128 of them
_HEADER = struct.Struct(">qiibIhiqqqhii")
_SEGMENT_LOG = re.compile(r"^(\d{20})\.log$")

Pread = Callable[[int, int], bytes]  # (nbytes, position) -> bytes, short at the end of the file
BatchSink = Callable[[int, BatchHeader], None]  # (position, header) of each good batch


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening a log found and cut. ``damaged`` is False only for a clean log or a *torn
    tail*: an incomplete last batch (its header claims more bytes than the file holds, or fewer
    than a header's bytes remain) at the very end of the last segment, above the recovery point
    — what a crash mid-append leaves. Anything else cut (a complete batch failing its checks, a
    gap, an overlap, anything below the recovery point) is damage: the replica may have lost
    data it had acknowledged. ``first_bad_offset`` is set exactly when ``damaged``: the log was
    truncated there (its log end offset after open)."""

    truncated_bytes: int  # bytes removed from the end of the log (deleted segments included)
    damaged: bool
    first_bad_offset: int | None
    reason: str  # one line for an operator; "clean" when nothing was cut


CLEAN = RecoveryReport(0, False, None, "clean")


@dataclass(frozen=True, slots=True)
class ScrubResult:
    bytes_checked: int  # bytes read by this call (at most max_bytes, or one header)
    damaged_offset: int | None  # first offset found damaged by this call, else None
    position: tuple[int, int]  # (segment base offset, byte position) the next call starts at


@dataclass(frozen=True, slots=True)
class Finding:
    """The first problem a walk met; the cursor stays on the batch at fault."""

    offset: int  # the offset the bad batch should start at (where the good prefix ends)
    position: int  # its byte position in the segment
    reason: str
    incomplete: bool  # the bytes end inside this batch: a torn tail if it ends the log


@dataclass(slots=True)
class _Partial:
    header: BatchHeader
    crc: int  # CRC-32C of bytes [21, checked_bytes) of the batch so far
    checked_bytes: int


@dataclass(slots=True)
class BatchCursor:
    """Where a walk continues: the next batch's byte position and the offset it must have."""

    position: int
    expected_offset: int
    last_epoch: int = UNDEFINED_EPOCH  # epochs never go down from here
    # (epoch, base_offset) wherever the epoch rose, when the caller wants them recorded
    epoch_starts: list[tuple[int, int]] | None = None
    partial: _Partial | None = field(default=None, repr=False)


def _header_problem(header: BatchHeader, cursor: BatchCursor) -> str | None:
    if header.magic != MAGIC or header.batch_length < HEADER_BYTES - LOG_OVERHEAD:
        return "no batch header here (bad magic or length)"
    if header.base_offset != cursor.expected_offset:
        return f"batch claims offset {header.base_offset}, expected {cursor.expected_offset}"
    if header.leader_epoch < cursor.last_epoch:
        return f"leader epoch {header.leader_epoch} after epoch {cursor.last_epoch}"
    try:
        _check_fields(header)
    except InvalidRecordError as exc:
        return str(exc)
    return None


def walk_batches(
    pread: Pread,
    size_bytes: int,
    cursor: BatchCursor,
    budget_bytes: int,
    *,
    epoch_for: Callable[[int], int] | None = None,
    log_start_offset: int = 0,
    sink: BatchSink | None = None,
) -> tuple[int, Finding | None]:
    """Check batches from ``cursor`` towards ``size_bytes``, moving the cursor past each good
    one (and handing it to ``sink``); return (bytes read, the first problem or None).

    Stops at ``size_bytes``, at the first problem, or when ``budget_bytes`` are read. A read
    shorter than asked means the file is shorter than ``size_bytes`` says (cut after it was
    opened): that is a problem too, at the batch where the bytes end.
    """
    read = 0
    crc32c = _crc32c.crc32c
    unpack_header = _HEADER.unpack_from
    while cursor.position < size_bytes and read < budget_bytes:
        partial = cursor.partial
        if partial is not None:
            header = partial.header
            want = min(header.size_bytes - partial.checked_bytes, budget_bytes - read, _CHUNK_BYTES)
            data = pread(want, cursor.position + partial.checked_bytes)
            read += len(data)
            if len(data) < want:
                cursor.partial = None
                return read, _short(cursor, cursor.position + partial.checked_bytes + len(data))
            partial.crc = _crc32c.crc32c(data, partial.crc)
            partial.checked_bytes += want
            if partial.checked_bytes == header.size_bytes:
                cursor.partial = None
                if partial.crc != header.crc:
                    return read, _bad(cursor, "CRC mismatch")
                _accept(cursor, cursor.position, header, epoch_for, log_start_offset, sink)
            continue
        remaining = size_bytes - cursor.position
        room = budget_bytes - read
        if read and room < HEADER_BYTES:
            break  # only the first read of a call may exceed the budget (to read one header)
        want = min(max(room, HEADER_BYTES), _CHUNK_BYTES, remaining)
        chunk = pread(want, cursor.position)
        read += len(chunk)
        view = memoryview(chunk)
        rel = 0
        chunk_start = cursor.position
        while len(chunk) - rel >= HEADER_BYTES:
            header = BatchHeader._make(unpack_header(chunk, rel))
            problem = _header_problem(header, cursor)
            if problem is None and epoch_for is not None and header.next_offset > log_start_offset:
                cached = epoch_for(max(header.base_offset, log_start_offset))
                if cached != header.leader_epoch:
                    problem = (
                        f"batch at offset {header.base_offset} has leader epoch "
                        f"{header.leader_epoch}, the epoch cache says {cached}"
                    )
            if problem is not None:
                return read, _bad(cursor, problem)
            size = header.size_bytes
            if cursor.position + size > size_bytes:
                return read, Finding(
                    cursor.expected_offset,
                    cursor.position,
                    f"batch of {size} bytes at byte {cursor.position} runs past the end "
                    f"({size_bytes} bytes)",
                    incomplete=True,
                )
            if len(chunk) - rel < size:
                break
            if crc32c(view[rel + CRC_START : rel + size]) != header.crc:
                return read, _bad(cursor, "CRC mismatch")
            # _accept, inlined: this loop runs once per batch of a whole log at open
            if header.leader_epoch > cursor.last_epoch:
                if cursor.epoch_starts is not None:
                    cursor.epoch_starts.append((header.leader_epoch, header.base_offset))
                cursor.last_epoch = header.leader_epoch
            if sink is not None:
                sink(chunk_start + rel, header)
            rel += size
            cursor.position = chunk_start + rel
            cursor.expected_offset = header.base_offset + header.last_offset_delta + 1
        if len(chunk) < want:  # the file ends before size_bytes: cut after it was opened
            return read, _short(cursor, chunk_start + len(chunk))
        if rel == 0:
            if remaining < HEADER_BYTES:
                return read, Finding(
                    cursor.expected_offset,
                    cursor.position,
                    f"{remaining} bytes at the end, fewer than a batch header",
                    incomplete=True,
                )
            if len(chunk) >= HEADER_BYTES:  # a batch larger than this read: CRC it in pieces
                header = BatchHeader._make(_HEADER.unpack_from(chunk, 0))
                cursor.partial = _Partial(
                    header, _crc32c.crc32c(view[CRC_START:]), checked_bytes=len(chunk)
                )
    return read, None


def _accept(
    cursor: BatchCursor,
    position: int,
    header: BatchHeader,
    epoch_for: Callable[[int], int] | None,
    log_start_offset: int,
    sink: BatchSink | None,
) -> None:
    if header.leader_epoch > cursor.last_epoch:
        if cursor.epoch_starts is not None:
            cursor.epoch_starts.append((header.leader_epoch, header.base_offset))
        cursor.last_epoch = header.leader_epoch
    if sink is not None:
        sink(position, header)
    cursor.position = position + header.size_bytes
    cursor.expected_offset = header.next_offset


def _bad(cursor: BatchCursor, problem: str) -> Finding:
    return Finding(
        cursor.expected_offset,
        cursor.position,
        f"batch at byte {cursor.position} (offset {cursor.expected_offset}): {problem}",
        incomplete=False,
    )


def _short(cursor: BatchCursor, file_end: int) -> Finding:
    return Finding(
        cursor.expected_offset,
        cursor.position,
        f"the file ends at byte {file_end}, inside the batch at byte {cursor.position} "
        f"(offset {cursor.expected_offset}): cut after it was opened",
        incomplete=False,
    )


def data_follows(pread: Pread, size_bytes: int, position: int, header: BatchHeader) -> bool:
    """Whether a whole, CRC-valid batch starting at ``header.next_offset`` lies in the bytes
    after ``position`` — i.e. a batch that *looks* torn (its length runs past the end) is really
    a damaged length field with good data after it, not a crash mid-append. Bounded: reads at
    most the bytes left in the file (which a torn tail keeps below one batch)."""
    start = position + HEADER_BYTES
    data = pread(min(size_bytes - start, 64 << 20), start)
    needle = struct.pack(">q", header.next_offset)
    at = data.find(needle)
    while at >= 0:
        if len(data) - at >= HEADER_BYTES:
            candidate = BatchHeader._make(_HEADER.unpack_from(data, at))
            end = at + candidate.size_bytes
            if (
                candidate.magic == MAGIC
                and candidate.batch_length >= HEADER_BYTES - LOG_OVERHEAD
                and end <= len(data)
                and _crc32c.crc32c(memoryview(data)[at + CRC_START : end]) == candidate.crc
            ):
                return True
        at = data.find(needle, at + 1)
    return False


# ---- the read-only verifier of a partition directory (``raftlog storage verify``) --------------


@dataclass(frozen=True, slots=True)
class DirectoryVerdict:
    directory: str
    ok: bool
    first_bad_offset: int | None  # set when not ok and an offset applies
    reason: str  # "ok", "ok (torn tail …)", or what is wrong
    segments: int = 0
    batches: int = 0
    log_end_offset: int | None = None


def verify_directory(directory: str) -> DirectoryVerdict:
    """Check every batch of every segment in ``directory`` without changing anything.

    A torn tail (an incomplete batch ending the last segment) is reported but is not damage:
    opening the log cuts it, as after any crash mid-append. Raises nothing for a missing or
    unreadable directory: the verdict says so.
    """
    try:
        names = os.listdir(directory)
    except OSError as exc:
        return DirectoryVerdict(directory, False, None, f"cannot list the directory: {exc}")
    bases = sorted(int(m.group(1)) for n in names if (m := _SEGMENT_LOG.match(n)))
    batches = 0

    def count(_position: int, _header: BatchHeader) -> None:
        nonlocal batches
        batches += 1

    cursor: BatchCursor | None = None
    for i, base in enumerate(bases):
        if cursor is not None and base != cursor.expected_offset:
            kind = "a gap" if base > cursor.expected_offset else "an overlap"
            return DirectoryVerdict(
                directory,
                False,
                cursor.expected_offset,
                f"{kind}: segment {base:020d}.log starts at {base}, the previous one ends at "
                f"{cursor.expected_offset}",
                i,
                batches,
            )
        epoch = UNDEFINED_EPOCH if cursor is None else cursor.last_epoch
        cursor = BatchCursor(0, base, epoch)
        path = os.path.join(directory, f"{base:020d}.log")
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            return DirectoryVerdict(directory, False, base, f"cannot open {path}: {exc}", i)
        try:
            size = os.fstat(fd).st_size

            def pread(nbytes: int, position: int, fd: int = fd) -> bytes:
                return os.pread(fd, nbytes, position)

            _, finding = walk_batches(pread, size, cursor, size + HEADER_BYTES, sink=count)
            if finding is not None:
                torn = (
                    finding.incomplete
                    and i == len(bases) - 1
                    and (
                        size - finding.position < HEADER_BYTES
                        or not data_follows(
                            pread,
                            size,
                            finding.position,
                            read_header(pread(HEADER_BYTES, finding.position)),
                        )
                    )
                )
                if torn:
                    return DirectoryVerdict(
                        directory,
                        True,
                        None,
                        f"ok (torn tail: {size - finding.position} bytes after offset "
                        f"{finding.offset} would be cut at open)",
                        len(bases),
                        batches,
                        finding.offset,
                    )
                return DirectoryVerdict(
                    directory,
                    False,
                    finding.offset,
                    f"{base:020d}.log: {finding.reason}",
                    i + 1,
                    batches,
                )
        except (OSError, StorageIOError) as exc:
            return DirectoryVerdict(directory, False, cursor.expected_offset, f"{path}: {exc}", i)
        finally:
            os.close(fd)
    end = cursor.expected_offset if cursor is not None else None
    return DirectoryVerdict(directory, True, None, "ok", len(bases), batches, end)
