"""Client errors: every wire error class (``raftlog.proto.errors``) plus the client's own.

Catch ``RaftlogError`` for anything the cluster answered with, ``ClientError`` for what the client
decided on its own (a buffer that stayed full, a delivery that timed out, a truncated log).
``retriable`` says whether trying again may help; the Producer and Consumer already retry those
within their timeouts, so an application sees one only when the time ran out.
"""

from __future__ import annotations

from raftlog.proto.errors import *  # noqa: F403 - the wire table is part of this API
from raftlog.proto.errors import (
    NetworkError,
    RaftlogError,
    RequestTimedOutError,
)
from raftlog.proto.errors import __all__ as _wire_names

__all__ = [
    *_wire_names,
    "BufferFullError",
    "ClientError",
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
