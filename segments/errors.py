"""Typed errors of the storage engine.

Each class carries the wire error code (a name from the proto ErrorCode table, mapped there by
name) and whether a client may retry. Storage knows nothing of gRPC: the broker translates
``code`` into the response's error field.
"""

from __future__ import annotations

from raftlog.proto.codes import ErrorCode

__all__ = [
    "CorruptRecordError",
    "InvalidRecordError",
    "LogDirFullError",
    "LogOffsetMismatchError",
    "MessageTooLargeError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "StorageError",
    "StorageIOError",
]


class StorageError(Exception):
    """Base of every error the storage engine raises on purpose."""

    code = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable = False


class CorruptRecordError(StorageError):
    """Bytes that fail the batch checks: bad CRC, magic, lengths, or undecodable records.

    ``offset`` is the first offset that could not be read when the error comes from stored data
    (the base offset a bad batch should have, or where a gap starts): a replica truncates its
    log there and fetches the rest again. None when no offset applies (a produced batch).
    """

    code = ErrorCode.CORRUPT_MESSAGE
    retriable = True  # the producer may resend; a reader may fetch from another replica

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class RecordTooLargeError(CorruptRecordError):
    """A batch whose payload inflates past the reader's ``uncompressed_bytes_max``.

    A CorruptRecordError (whoever handles unreadable batches handles this one) that says the
    reader stopped inflating at its limit — a decompression bomb, or an honest batch bigger
    than this reader allows. Reading the same bytes again fails the same way: not retriable;
    raise the limit if the batch is honest.
    """

    retriable = False


class InvalidRecordError(StorageError):
    """A well-formed batch whose fields break a rule (record_count, timestamps, codec)."""

    code = ErrorCode.INVALID_RECORD


class MessageTooLargeError(StorageError):
    """A batch over ``max.message.bytes`` (or the segment size)."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class OffsetOutOfRangeError(StorageError):
    """A read or truncation at an offset outside [log_start_offset, log_end_offset]."""

    code = ErrorCode.OFFSET_OUT_OF_RANGE


class LogOffsetMismatchError(StorageError):
    """A follower append whose base offset is not the log end offset (offsets only grow)."""

    code = ErrorCode.INVALID_REQUEST


class StorageIOError(StorageError):
    """The disk failed a read or write. The log stays consistent; the append did not happen."""

    code = ErrorCode.KAFKA_STORAGE_ERROR
    retriable = True


class LogDirFullError(StorageIOError):
    """ENOSPC: the append was rolled back; the log stays readable."""
