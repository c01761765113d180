"""raftlog.raft: the metadata quorum.

The pure core — commands, the metadata state machine, replica assignment, the controller's
rules, the listener — imports nothing of ours and no IO. ``raftlog.raft.adapter`` is the only
module that imports pysyncobj (it patches pysyncobj's unpickler on import), so it is loaded only
when asked for: ``from raftlog.raft.adapter import RaftQuorum``.
"""

from .assignment import AssignmentError, assign_replicas
from .commands import (
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    Command,
    CreateTopic,
    DeleteTopic,
    ElectLeader,
    FenceBroker,
    RegisterBroker,
    UnfenceBroker,
    decode_command,
    encode_command,
)
from .controller import ControllerConfig, ControllerCore
from .listener import EventKind, PartitionEvent, PartitionListener
from .metadata import (
    NO_LEADER,
    Applied,
    BrokerRecord,
    MetadataError,
    MetadataState,
    PartitionRecord,
    TopicRecord,
)
from .store import MetadataStore
from .topic_config import TOPIC_CONFIGS, ConfigError

__all__ = [
    "NO_LEADER",
    "TOPIC_CONFIGS",
    "AllocateProducerIds",
    "AlterPartition",
    "AlterTopicConfig",
    "Applied",
    "AssignmentError",
    "BrokerRecord",
    "Command",
    "ConfigError",
    "ControllerConfig",
    "ControllerCore",
    "CreateTopic",
    "DeleteTopic",
    "ElectLeader",
    "EventKind",
    "FenceBroker",
    "MetadataError",
    "MetadataState",
    "MetadataStore",
    "PartitionEvent",
    "PartitionListener",
    "PartitionRecord",
    "RegisterBroker",
    "TopicRecord",
    "UnfenceBroker",
    "assign_replicas",
    "decode_command",
    "encode_command",
]
