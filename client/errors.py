"""Client errors: every wire error class (``raftlog.proto.errors``) plus the client's own.

Catch ``RaftlogError`` for anything the cluster answered with, ``ClientError`` for what the client
decided on its own (a buffer that stayed full, a delivery that timed out, a truncated log).
``retriable`` says whether trying again may help; the Producer and Consumer already retry those
within their timeouts, so an application sees one only when the time ran out.
"""

from __future__ import annotations

from raftlog.proto.errors import *  # noqa: F403 - the wire table is part of this API
from raftlog.proto.errors import (
    CorruptMessageError,
    NetworkError,
    RaftlogError,
    RequestTimedOutError,
)
from raftlog.proto.errors import __all__ as _wire_names

__all__ = [
    *_wire_names,
    "BufferFullError",
    "ClientError",
    "CorruptBatchError",
    "DeliveryTimeoutError",
    "LogTruncationError",
    "NoBrokersAvailableError",
    "ProducerClosedError",
]


class ClientError(RaftlogError):
    """Decided by the client, not answered by a broker."""


class NoBrokersAvailableError(NetworkError):
    """None of the bootstrap or known brokers answered."""


class BufferFullError(ClientError):
    """``send`` waited ``max_block_ms`` for buffer space (back-pressure) and got none."""

    retriable = True


class DeliveryTimeoutError(RequestTimedOutError):
    """A record was not acknowledged within ``delivery_timeout_ms`` (retries included)."""


class ProducerClosedError(ClientError):
    """``send`` after ``close``."""


class LogTruncationError(ClientError):
    """The partition's log diverged below the consumer's position (KIP-320): records it already
    returned were truncated by a leader change. ``divergent_offset`` is where they diverge."""

    def __init__(self, message: str, topic: str, partition: int, divergent_offset: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.divergent_offset = divergent_offset


class CorruptBatchError(CorruptMessageError, ClientError):
    """A fetched batch whose CRC holds but whose records do not decode (a count, length or offset
    delta that lies, garbage under a valid CRC) or that inflates past the consumer's
    ``batch_uncompressed_bytes_max``. Code CORRUPT_MESSAGE, decided by the client.

    The Consumer returned every record before it and keeps its position at ``offset``; it raises
    this on every poll until the application seeks the partition: to ``next_offset`` to skip the
    batch (None when even its header is unreadable), or to ``offset`` to fetch it again. Not
    retriable: the same bytes decode the same way.
    """

    retriable = False

    def __init__(
        self, message: str, topic: str, partition: int, offset: int, next_offset: int | None
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.next_offset = next_offset
