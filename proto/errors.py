"""The error table: one exception class per ``ErrorCode`` of ``common.proto``.

Shared by the broker (which answers with codes) and the client (which raises these). Each class
carries its wire ``code`` and ``name``, whether a client may ``retriable``-retry it, and whether it
means the client's metadata is stale (``invalid_metadata``: refresh, then retry) — aiokafka's
shape. ``error_for`` maps a code back to its class; ``raise_for`` raises from an ``Error`` message.
Transport problems (no broker reachable) are ``NetworkError``, raised by the client itself.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

__all__ = [
    "ERRORS_BY_CODE",
    "ERRORS_BY_NAME",
    "BrokerNotAvailableError",
    "ClusterAuthorizationFailedError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptMessageError",
    "DuplicateSequenceNumberError",
    "DuplicateVoterError",
    "ElectionNotNeededError",
    "EligibleLeadersNotAvailableError",
    "FencedInstanceIdError",
    "FencedLeaderEpochError",
    "GroupAuthorizationFailedError",
    "GroupIdNotFoundError",
    "GroupMaxSizeReachedError",
    "IllegalGenerationError",
    "InconsistentGroupProtocolError",
    "IneligibleReplicaError",
    "InvalidConfigError",
    "InvalidGroupIdError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidReplicaAssignmentError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidSessionTimeoutError",
    "InvalidTimestampError",
    "InvalidTopicError",
    "InvalidUpdateVersionError",
    "KafkaStorageError",
    "LeaderNotAvailableError",
    "MemberIdRequiredError",
    "MessageTooLargeError",
    "NetworkError",
    "NewLeaderElectedError",
    "NoReassignmentInProgressError",
    "NonEmptyGroupError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderOrFollowerError",
    "OffsetMovedToTieredStorageError",
    "OffsetNotAvailableError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceNumberError",
    "PolicyViolationError",
    "PreferredLeaderNotAvailableError",
    "ProducerFencedError",
    "RaftlogError",
    "RebalanceInProgressError",
    "RecordListTooLargeError",
    "ReplicaNotAvailableError",
    "RequestTimedOutError",
    "ResourceNotFoundError",
    "SaslAuthenticationFailedError",
    "SecurityDisabledError",
    "StaleBrokerEpochError",
    "ThrottlingQuotaExceededError",
    "TopicAlreadyExistsError",
    "TopicAuthorizationFailedError",
    "UnknownLeaderEpochError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnsupportedSaslMechanismError",
    "UnsupportedVersionError",
    "VoterNotFoundError",
    "error_for",
    "raise_for",
]


class RaftlogError(Exception):
    """Base of every error that carries a wire code."""

    code: ClassVar[int] = -1
    name: ClassVar[str] = "UNKNOWN_SERVER_ERROR"
    retriable: ClassVar[bool] = False
    invalid_metadata: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.name)
        self.message = message or self.name

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message != self.name else self.name


class UnknownServerError(RaftlogError):
    code = -1
    name = "UNKNOWN_SERVER_ERROR"


class OffsetOutOfRangeError(RaftlogError):
    code = 1
    name = "OFFSET_OUT_OF_RANGE"


class CorruptMessageError(RaftlogError):
    code = 2
    name = "CORRUPT_MESSAGE"
    retriable = True


class UnknownTopicOrPartitionError(RaftlogError):
    code = 3
    name = "UNKNOWN_TOPIC_OR_PARTITION"
    retriable = True
    invalid_metadata = True


class LeaderNotAvailableError(RaftlogError):
    code = 5
    name = "LEADER_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class NotLeaderOrFollowerError(RaftlogError):
    code = 6
    name = "NOT_LEADER_OR_FOLLOWER"
    retriable = True
    invalid_metadata = True


class RequestTimedOutError(RaftlogError):
    code = 7
    name = "REQUEST_TIMED_OUT"
    retriable = True


class BrokerNotAvailableError(RaftlogError):
    code = 8
    name = "BROKER_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class ReplicaNotAvailableError(RaftlogError):
    code = 9
    name = "REPLICA_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class MessageTooLargeError(RaftlogError):
    code = 10
    name = "MESSAGE_TOO_LARGE"


class NetworkError(RaftlogError):
    code = 13
    name = "NETWORK_EXCEPTION"
    retriable = True
    invalid_metadata = True


class CoordinatorLoadInProgressError(RaftlogError):
    code = 14
    name = "COORDINATOR_LOAD_IN_PROGRESS"
    retriable = True


class CoordinatorNotAvailableError(RaftlogError):
    code = 15
    name = "COORDINATOR_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class NotCoordinatorError(RaftlogError):
    code = 16
    name = "NOT_COORDINATOR"
    retriable = True
    invalid_metadata = True


class InvalidTopicError(RaftlogError):
    code = 17
    name = "INVALID_TOPIC_EXCEPTION"


class RecordListTooLargeError(RaftlogError):
    code = 18
    name = "RECORD_LIST_TOO_LARGE"


class NotEnoughReplicasError(RaftlogError):
    code = 19
    name = "NOT_ENOUGH_REPLICAS"
    retriable = True


class NotEnoughReplicasAfterAppendError(RaftlogError):
    code = 20
    name = "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
    retriable = True


class InvalidRequiredAcksError(RaftlogError):
    code = 21
    name = "INVALID_REQUIRED_ACKS"


class IllegalGenerationError(RaftlogError):
    code = 22
    name = "ILLEGAL_GENERATION"


class InvalidGroupIdError(RaftlogError):
    code = 24
    name = "INVALID_GROUP_ID"


class UnknownMemberIdError(RaftlogError):
    code = 25
    name = "UNKNOWN_MEMBER_ID"


class InvalidSessionTimeoutError(RaftlogError):
    code = 26
    name = "INVALID_SESSION_TIMEOUT"


class RebalanceInProgressError(RaftlogError):
    code = 27
    name = "REBALANCE_IN_PROGRESS"
    retriable = True


class TopicAuthorizationFailedError(RaftlogError):
    code = 29
    name = "TOPIC_AUTHORIZATION_FAILED"


class GroupAuthorizationFailedError(RaftlogError):
    """No ACL lets this principal use the group."""

    code = 30
    name = "GROUP_AUTHORIZATION_FAILED"


class ClusterAuthorizationFailedError(RaftlogError):
    """No ACL lets this principal do this to the cluster (or it is a broker-only call)."""

    code = 31
    name = "CLUSTER_AUTHORIZATION_FAILED"


class InvalidTimestampError(RaftlogError):
    code = 32
    name = "INVALID_TIMESTAMP"


class UnsupportedSaslMechanismError(RaftlogError):
    """The broker does not offer this authentication mechanism."""

    code = 33
    name = "UNSUPPORTED_SASL_MECHANISM"


class UnsupportedVersionError(RaftlogError):
    code = 35
    name = "UNSUPPORTED_VERSION"


class TopicAlreadyExistsError(RaftlogError):
    code = 36
    name = "TOPIC_ALREADY_EXISTS"


class InvalidPartitionsError(RaftlogError):
    code = 37
    name = "INVALID_PARTITIONS"


class InvalidReplicationFactorError(RaftlogError):
    code = 38
    name = "INVALID_REPLICATION_FACTOR"


class InvalidReplicaAssignmentError(RaftlogError):
    code = 39
    name = "INVALID_REPLICA_ASSIGNMENT"


class InvalidConfigError(RaftlogError):
    code = 40
    name = "INVALID_CONFIG"


class NotControllerError(RaftlogError):
    code = 41
    name = "NOT_CONTROLLER"
    retriable = True
    invalid_metadata = True


class InvalidRequestError(RaftlogError):
    code = 42
    name = "INVALID_REQUEST"


class PolicyViolationError(RaftlogError):
    code = 44
    name = "POLICY_VIOLATION"


class OutOfOrderSequenceNumberError(RaftlogError):
    code = 45
    name = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class DuplicateSequenceNumberError(RaftlogError):
    code = 46
    name = "DUPLICATE_SEQUENCE_NUMBER"


class InvalidProducerEpochError(RaftlogError):
    code = 47
    name = "INVALID_PRODUCER_EPOCH"


class SecurityDisabledError(RaftlogError):
    """The cluster runs plaintext: there are no principals, ACLs or users to manage."""

    code = 54
    name = "SECURITY_DISABLED"


class KafkaStorageError(RaftlogError):
    code = 56
    name = "KAFKA_STORAGE_ERROR"
    retriable = True
    invalid_metadata = True


class SaslAuthenticationFailedError(RaftlogError):
    """Wrong user name or password (or no such user)."""

    code = 58
    name = "SASL_AUTHENTICATION_FAILED"


class UnknownProducerIdError(RaftlogError):
    code = 59
    name = "UNKNOWN_PRODUCER_ID"


class NonEmptyGroupError(RaftlogError):
    code = 68
    name = "NON_EMPTY_GROUP"


class GroupIdNotFoundError(RaftlogError):
    code = 69
    name = "GROUP_ID_NOT_FOUND"


class FencedLeaderEpochError(RaftlogError):
    code = 74
    name = "FENCED_LEADER_EPOCH"
    retriable = True
    invalid_metadata = True


class UnknownLeaderEpochError(RaftlogError):
    code = 75
    name = "UNKNOWN_LEADER_EPOCH"
    retriable = True
    invalid_metadata = True


class StaleBrokerEpochError(RaftlogError):
    code = 77
    name = "STALE_BROKER_EPOCH"


class OffsetNotAvailableError(RaftlogError):
    code = 78
    name = "OFFSET_NOT_AVAILABLE"
    retriable = True


class MemberIdRequiredError(RaftlogError):
    code = 79
    name = "MEMBER_ID_REQUIRED"


class PreferredLeaderNotAvailableError(RaftlogError):
    code = 80
    name = "PREFERRED_LEADER_NOT_AVAILABLE"
    retriable = True


class EligibleLeadersNotAvailableError(RaftlogError):
    code = 83
    name = "ELIGIBLE_LEADERS_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class ElectionNotNeededError(RaftlogError):
    code = 84
    name = "ELECTION_NOT_NEEDED"


class NoReassignmentInProgressError(RaftlogError):
    code = 85
    name = "NO_REASSIGNMENT_IN_PROGRESS"


class InvalidRecordError(RaftlogError):
    code = 87
    name = "INVALID_RECORD"


class ProducerFencedError(RaftlogError):
    code = 90
    name = "PRODUCER_FENCED"


class ThrottlingQuotaExceededError(RaftlogError):
    """The principal's quota is used up for now; retry after the throttle time."""

    code = 89
    name = "THROTTLING_QUOTA_EXCEEDED"
    retriable = True


class ResourceNotFoundError(RaftlogError):
    """The named resource (a user, an ACL) does not exist."""

    code = 91
    name = "RESOURCE_NOT_FOUND"


class InvalidUpdateVersionError(RaftlogError):
    code = 95
    name = "INVALID_UPDATE_VERSION"


class InconsistentGroupProtocolError(RaftlogError):
    code = 23
    name = "INCONSISTENT_GROUP_PROTOCOL"


class GroupMaxSizeReachedError(RaftlogError):
    code = 81
    name = "GROUP_MAX_SIZE_REACHED"


class FencedInstanceIdError(RaftlogError):
    """A static member (``group_instance_id``) was replaced by a newer instance of itself."""

    code = 82
    name = "FENCED_INSTANCE_ID"


class IneligibleReplicaError(RaftlogError):
    code = 107
    name = "INELIGIBLE_REPLICA"


class NewLeaderElectedError(RaftlogError):
    code = 108
    name = "NEW_LEADER_ELECTED"


class OffsetMovedToTieredStorageError(RaftlogError):
    code = 109
    name = "OFFSET_MOVED_TO_TIERED_STORAGE"


class DuplicateVoterError(RaftlogError):
    """add-voter: the broker id or the Raft address is already a voter's."""

    code = 126
    name = "DUPLICATE_VOTER"


class VoterNotFoundError(RaftlogError):
    """remove-voter: the broker is not a voter."""

    code = 127
    name = "VOTER_NOT_FOUND"


ERRORS_BY_CODE: dict[int, type[RaftlogError]] = {
    cls.code: cls for cls in RaftlogError.__subclasses__()
}
ERRORS_BY_NAME: dict[str, type[RaftlogError]] = {
    cls.name: cls for cls in RaftlogError.__subclasses__()
}


class _ErrorMessage(Protocol):
    code: int
    message: str


def error_for(code: int | str, message: str = "") -> RaftlogError:
    """The exception for a wire code (int) or code name (str); unknown ones are server errors."""
    table: dict[int, type[RaftlogError]] | dict[str, type[RaftlogError]]
    table = ERRORS_BY_NAME if isinstance(code, str) else ERRORS_BY_CODE
    cls = table.get(code, UnknownServerError)  # type: ignore[arg-type]
    if cls is UnknownServerError and code not in (-1, "UNKNOWN_SERVER_ERROR"):
        message = f"unknown error code {code!r}: {message}"
    return cls(message)


def raise_for(error: _ErrorMessage | None) -> None:
    """Raise the exception an ``Error`` message stands for; return if it is NONE (0)."""
    if error is not None and error.code != 0:
        raise error_for(error.code, error.message)
