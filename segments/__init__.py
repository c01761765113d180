"""raftlog.segments: the storage engine — record batches, segments, indexes, recovery, retention.

Imports nothing else of raftlog. See ``batch.py`` for the batch format and ``log.py`` for the
flush policy and what it means for durability.
"""

from .batch import (
    HEADER_BYTES,
    MAGIC,
    BatchBuilder,
    BatchHeader,
    Compression,
    Record,
    build_batch,
    iter_batches,
    iter_records,
    read_header,
    validate_batch,
)
from .durable import fsync_directory, makedirs_durable, write_file_durable
from .epochs import UNDEFINED_EPOCH, UNDEFINED_OFFSET, EpochEntry, LeaderEpochCache
from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogDirFullError,
    LogOffsetMismatchError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    StorageIOError,
)
from .log import AppendInfo, Log, LogConfig, ReadResult
from .recovery import RecoveryReport, ScrubResult
from .state import BrokerStateStore

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "UNDEFINED_EPOCH",
    "UNDEFINED_OFFSET",
    "AppendInfo",
    "BatchBuilder",
    "BatchHeader",
    "BrokerStateStore",
    "Compression",
    "CorruptRecordError",
    "EpochEntry",
    "InvalidRecordError",
    "LeaderEpochCache",
    "Log",
    "LogConfig",
    "LogDirFullError",
    "LogOffsetMismatchError",
    "MessageTooLargeError",
    "OffsetOutOfRangeError",
    "ReadResult",
    "Record",
    "RecordTooLargeError",
    "RecoveryReport",
    "ScrubResult",
    "StorageError",
    "StorageIOError",
    "build_batch",
    "fsync_directory",
    "iter_batches",
    "iter_records",
    "makedirs_durable",
    "read_header",
    "validate_batch",
    "write_file_durable",
]
