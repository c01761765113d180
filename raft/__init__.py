"""raftlog.raft: the metadata quorum.

The pure core — commands, the metadata state machine, replica assignment, the controller's
rules, the listener — imports nothing of ours and no IO. The quorum's shell imports pysyncobj
and patches it on import (``raftlog.raft.quorum``, with ``pysyncobj_guards`` and ``raft_node``),
so it is loaded only when asked for: ``from raftlog.raft.quorum import RaftQuorum``; its
config, status and errors are in ``raftlog.raft.quorum_types``, which does not load pysyncobj.
"""

from .acl import (
    AclBinding,
    AclError,
    AclFilter,
    AclIndex,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    parse_operation,
    parse_principal,
    validate_binding,
)
from .assignment import AssignmentError, assign_replicas
from .commands import (
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    Command,
    CreateAcls,
    CreateTopic,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeader,
    FenceBroker,
    MoveLeader,
    RegisterBroker,
    UnfenceBroker,
    UpsertScramCredential,
    decode_command,
    encode_command,
)
from .controller import ControllerConfig, ControllerCore
from .listener import EventKind, PartitionEvent, PartitionListener
from .metadata import ACL_BINDINGS_MAX, SCRAM_USERS_MAX, MetadataError, MetadataState
from .metadata_records import NO_LEADER, Applied, BrokerRecord, PartitionRecord, TopicRecord
from .scram import (
    ScramCredential,
    ScramError,
    ScramMechanism,
    client_proof,
    credential_from_salted_password,
    make_credential,
    salted_password,
    server_signature,
    validate_credential,
    validate_user,
    verify_client_proof,
    verify_password,
)
from .store import MetadataStore
from .topic_config import TOPIC_CONFIGS, ConfigError

__all__ = [
    "ACL_BINDINGS_MAX",
    "NO_LEADER",
    "SCRAM_USERS_MAX",
    "TOPIC_CONFIGS",
    "AclBinding",
    "AclError",
    "AclFilter",
    "AclIndex",
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
    "CreateAcls",
    "CreateTopic",
    "DeleteAcls",
    "DeleteScramCredential",
    "DeleteTopic",
    "ElectLeader",
    "EventKind",
    "FenceBroker",
    "MetadataError",
    "MetadataState",
    "MetadataStore",
    "MoveLeader",
    "Operation",
    "PartitionEvent",
    "PartitionListener",
    "PartitionRecord",
    "PatternType",
    "Permission",
    "RegisterBroker",
    "ResourceType",
    "ScramCredential",
    "ScramError",
    "ScramMechanism",
    "TopicRecord",
    "UnfenceBroker",
    "UpsertScramCredential",
    "assign_replicas",
    "client_proof",
    "credential_from_salted_password",
    "decode_command",
    "encode_command",
    "make_credential",
    "parse_operation",
    "parse_principal",
    "salted_password",
    "server_signature",
    "validate_binding",
    "validate_credential",
    "validate_user",
    "verify_client_proof",
    "verify_password",
]
