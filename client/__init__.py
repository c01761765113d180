"""raftlog.client: the Producer, Consumer and Admin clients, their errors, and the command line.

Depends on ``raftlog.proto`` (the wire contract) and the record-batch codec
(``raftlog.segments.batch``, pure); never on the broker.
"""

from .admin import Acl, Admin, ConfigEntry, PartitionDescription, TopicDescription
from .consumer import Consumer, ConsumerRecord
from .errors import (
    BufferFullError,
    ClientError,
    CorruptBatchError,
    DeliveryTimeoutError,
    LogTruncationError,
    NoBrokersAvailableError,
    ProducerClosedError,
    RaftlogError,
)
from .metadata import ClusterMetadata
from .producer import Producer, RecordMetadata, SendFuture
from .security import ClientSecurity, SecurityConfigError

__all__ = [
    "Acl",
    "Admin",
    "BufferFullError",
    "ClientError",
    "ClientSecurity",
    "ClusterMetadata",
    "ConfigEntry",
    "Consumer",
    "ConsumerRecord",
    "CorruptBatchError",
    "DeliveryTimeoutError",
    "LogTruncationError",
    "NoBrokersAvailableError",
    "PartitionDescription",
    "Producer",
    "ProducerClosedError",
    "RaftlogError",
    "RecordMetadata",
    "SecurityConfigError",
    "SendFuture",
    "TopicDescription",
]
