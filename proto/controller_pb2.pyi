from raftlog.proto import broker_pb2 as _broker_pb2
from raftlog.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControllerHint(_message.Message):
    __slots__ = ("controller_id", "address")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    controller_id: int
    address: str
    def __init__(self, controller_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class RegisterBrokerRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation", "address", "rack", "unclean", "password_address", "kafka_address")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    UNCLEAN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KAFKA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation: int
    address: str
    rack: str
    unclean: bool
    password_address: str
    kafka_address: str
    def __init__(self, broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ..., address: _Optional[str] = ..., rack: _Optional[str] = ..., unclean: _Optional[bool] = ..., password_address: _Optional[str] = ..., kafka_address: _Optional[str] = ...) -> None: ...

class RegisterBrokerResponse(_message.Message):
    __slots__ = ("error", "controller", "broker_epoch")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    BROKER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    broker_epoch: int
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., broker_epoch: _Optional[int] = ...) -> None: ...

class BrokerHeartbeatRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation", "metadata_version", "reachable_peers")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    METADATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_PEERS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation: int
    metadata_version: int
    reachable_peers: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ..., metadata_version: _Optional[int] = ..., reachable_peers: _Optional[_Iterable[int]] = ...) -> None: ...

class BrokerHeartbeatResponse(_message.Message):
    __slots__ = ("error", "controller", "should_register", "fenced", "heartbeat_interval_ms")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    SHOULD_REGISTER_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    should_register: bool
    fenced: bool
    heartbeat_interval_ms: int
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., should_register: _Optional[bool] = ..., fenced: _Optional[bool] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class AlterPartitionRequest(_message.Message):
    __slots__ = ("topic", "partition", "broker_id", "incarnation", "leader_epoch", "partition_epoch", "isr", "isr_incarnations")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    ISR_INCARNATIONS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    broker_id: int
    incarnation: int
    leader_epoch: int
    partition_epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    isr_incarnations: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ..., leader_epoch: _Optional[int] = ..., partition_epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., isr_incarnations: _Optional[_Iterable[int]] = ...) -> None: ...

class AlterPartitionResponse(_message.Message):
    __slots__ = ("error", "controller", "leader_epoch", "partition_epoch", "isr", "metadata_version")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    METADATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    leader_epoch: int
    partition_epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    metadata_version: int
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., leader_epoch: _Optional[int] = ..., partition_epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., metadata_version: _Optional[int] = ...) -> None: ...

class ReportDamagedReplicasRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation", "partitions")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation: int
    partitions: _containers.RepeatedCompositeFieldContainer[TopicPartitionRef]
    def __init__(self, broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[TopicPartitionRef, _Mapping]]] = ...) -> None: ...

class TopicPartitionRef(_message.Message):
    __slots__ = ("topic", "partition")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class ReportDamagedReplicasResponse(_message.Message):
    __slots__ = ("error", "controller", "metadata_version")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    METADATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    metadata_version: int
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., metadata_version: _Optional[int] = ...) -> None: ...

class AllocateProducerIdsRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation", "count")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation: int
    count: int
    def __init__(self, broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class PartitionStatesRequest(_message.Message):
    __slots__ = ("broker_id", "incarnation")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    incarnation: int
    def __init__(self, broker_id: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...

class PartitionStatesResponse(_message.Message):
    __slots__ = ("error", "controller", "metadata_version", "partitions")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    METADATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    metadata_version: int
    partitions: bytes
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., metadata_version: _Optional[int] = ..., partitions: _Optional[bytes] = ...) -> None: ...

class FetchMetadataRequest(_message.Message):
    __slots__ = ("broker_id", "version", "max_wait_ms")
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    broker_id: int
    version: int
    max_wait_ms: int
    def __init__(self, broker_id: _Optional[int] = ..., version: _Optional[int] = ..., max_wait_ms: _Optional[int] = ...) -> None: ...

class FetchMetadataResponse(_message.Message):
    __slots__ = ("error", "leader_id", "version", "from_version", "commands", "snapshot")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    leader_id: int
    version: int
    from_version: int
    commands: _containers.RepeatedScalarFieldContainer[bytes]
    snapshot: bytes
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., leader_id: _Optional[int] = ..., version: _Optional[int] = ..., from_version: _Optional[int] = ..., commands: _Optional[_Iterable[bytes]] = ..., snapshot: _Optional[bytes] = ...) -> None: ...

class AllocateProducerIdsResponse(_message.Message):
    __slots__ = ("error", "controller", "start", "count")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.Error
    controller: ControllerHint
    start: int
    count: int
    def __init__(self, error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., controller: _Optional[_Union[ControllerHint, _Mapping]] = ..., start: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
