"""Metadata commands: the records of the Raft log, and their cbor2 encoding.

Every change to cluster metadata is one of these frozen dataclasses, encoded as a cbor2 map
``{"v": 1, "t": <type name>, ...fields}`` and replicated as opaque bytes through the quorum. The
state machine (``metadata.py``) decodes and applies them; nothing that arrives over the network
is ever unpickled. A decoder that meets an unknown ``v`` or ``t`` raises ``CommandDecodeError``;
the state machine turns that into an INVALID_REQUEST result, so a newer command in the log of an
older node is refused visibly instead of crashing the Raft thread.

Worked example: ``FenceBroker(broker_id=2, incarnation=7)`` encodes as the cbor2 map
``{"v": 1, "t": "fence_broker", "broker_id": 2, "incarnation": 7}`` (33 bytes).

Commands that carry records — ACL bindings and filters, SCRAM credentials — hold them as the
records' own plain maps (``AclBinding.to_dict``, ``ScramCredential.to_dict``): ``CreateAcls``
encodes as ``{"v": 1, "t": "create_acls", "bindings": [{"principal": "User:alice",
"resource_type": "topic", "pattern_type": "literal", "resource_name": "orders", "operation":
"read", "permission": "allow", "host": "*"}]}``. Decoding checks their shape (a bad one is a
``CommandDecodeError``); the state machine checks their rules.

Results are cbor2 maps too: ``{"ok": True, ...}`` or ``{"error": "<ErrorCode name>",
"message": "..."}`` (``encode_result``); decoded (``decode_result``), the error is an ``ErrorCode``
again, as it is in the state machine's result maps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from raftlog.proto.codes import ErrorCode

from .acl import AclBinding, AclFilter
from .scram import ScramCredential

__all__ = [
    "COMMAND_VERSION",
    "AddPartitions",
    "AllocateProducerIds",
    "AlterPartition",
    "AlterTopicConfig",
    "CancelVoter",
    "Command",
    "CommandDecodeError",
    "CreateAcls",
    "CreateTopic",
    "DeleteAcls",
    "DeleteScramCredential",
    "DeleteTopic",
    "ElectLeader",
    "FenceBroker",
    "FenceBrokerPartitions",
    "MoveLeader",
    "PrepareVoter",
    "ReassignPartitions",
    "RegisterBroker",
    "ReplicasDamaged",
    "SetVoters",
    "UnfenceBroker",
    "UpsertScramCredential",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
]

COMMAND_VERSION = 1


class CommandDecodeError(ValueError):
    """Bytes that are not a command this version understands (remote's fault or a newer node)."""


@dataclass(frozen=True, slots=True)
class RegisterBroker:
    """A broker process announces itself; ``incarnation`` is new on every process start."""

    broker_id: int
    address: str  # advertised gRPC host:port
    incarnation: int
    rack: str | None = None
    # the process found a new boot id (or no proof of a clean past): the machine lost its page
    # cache, so any of its replicas may have lost acknowledged records that were not fsynced
    unclean: bool = False
    # advertised host:port of its password listener (TLS, no client certificate), if it has one
    password_address: str | None = None
    # advertised host:port of its Kafka-protocol listener, if it has one
    kafka_address: str | None = None


@dataclass(frozen=True, slots=True)
class FenceBroker:
    """The controller lost the broker's heartbeats: it leads nothing and leaves every ISR."""

    broker_id: int
    incarnation: int  # the incarnation the decision was made about; a newer one is not fenced


@dataclass(frozen=True, slots=True)
class FenceBrokerPartitions:
    """The first part of fencing a broker that replicates many partitions, for some of them
    (at most ``FENCE_PARTITIONS_PER_COMMAND_MAX``): it leaves their leadership and ISR exactly
    as ``FenceBroker`` would make it leave them, while it stays registered. The controller
    sends these in bounded chunks, then the ``FenceBroker`` that fences the broker and covers
    whatever is left — as KRaft writes a fence's partition changes before its fence record —
    so that no single command holds the Raft thread for long (60,000 partitions in one
    FenceBroker took 0.6-0.9 s to apply, past the election timeout)."""

    broker_id: int
    incarnation: int
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class UnfenceBroker:
    """A fenced broker heartbeats again: it may rejoin ISRs and lead offline partitions."""

    broker_id: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class ReplicasDamaged:
    """A broker found damage in these replicas' logs (a bad CRC, a gap, a cut file) and cut
    them at the damage: they may lack acknowledged records until they catch up again."""

    broker_id: int
    incarnation: int
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CreateTopic:
    """A topic with an explicit assignment: ``assignment[p]`` is partition p's replica list.

    The controller computes the assignment (``assignment.py``) before submitting, so applying
    stays deterministic; the state machine validates it.
    """

    name: str
    assignment: tuple[tuple[int, ...], ...]
    configs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    name: str


@dataclass(frozen=True, slots=True)
class AlterTopicConfig:
    name: str
    set_configs: tuple[tuple[str, str], ...] = ()
    delete_configs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlterPartition:
    """The partition leader asks for a new ISR: compare-and-set on ``partition_epoch``."""

    topic: str
    partition: int
    broker_id: int  # the requesting leader
    leader_epoch: int  # the requester's leader epoch
    partition_epoch: int  # the epoch the requester's view is based on
    isr: tuple[int, ...]
    # per ISR member, the incarnation the leader saw fetching (-1: unknown); () from older
    # brokers. A joining member whose registered incarnation differs is refused (KIP-903).
    incarnations: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ElectLeader:
    """Elect a leader for partitions: ``preferred`` moves leadership back to the first replica;
    otherwise only partitions without a live leader change."""

    partitions: tuple[tuple[str, int], ...]
    preferred: bool = False


@dataclass(frozen=True, slots=True)
class ReassignPartitions:
    """Move partitions onto new replica lists (KIP-455): ``moves`` holds (topic, partition,
    target replicas); an empty target cancels the reassignment in progress. The targets join
    as followers, catch up (``throttle`` bytes/s from their leader, 0: no limit) and enter the
    ISR; once every target replica is in the ISR the others leave, in the same command that
    brings in the last one (``metadata.py``), and leadership moves off a leaving leader."""

    moves: tuple[tuple[str, int, tuple[int, ...]], ...]
    throttle: int = 0


@dataclass(frozen=True, slots=True)
class AddPartitions:
    """Grow a topic: ``assignment`` holds the replica lists of the new partitions, numbered from
    the topic's current count (the controller computes it, as for CreateTopic)."""

    name: str
    assignment: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class MoveLeader:
    """Move a live partition's leadership to ``leader`` with the ISR ``isr``, both drawn from its
    current ISR and ELR (every member of which holds all committed records), if the partition is
    still in ``leader_epoch``. The controller's answer to a leader that reaches too few of its
    ISR while another member reaches enough (``controller.py``)."""

    topic: str
    partition: int
    leader_epoch: int
    leader: int
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllocateProducerIds:
    broker_id: int
    count: int = 1000


@dataclass(frozen=True, slots=True)
class CreateAcls:
    """Add ACL bindings (all or none; ones already present are kept once)."""

    bindings: tuple[AclBinding, ...]


@dataclass(frozen=True, slots=True)
class DeleteAcls:
    """Remove every binding that any of the filters matches (the result lists them)."""

    filters: tuple[AclFilter, ...]


@dataclass(frozen=True, slots=True)
class UpsertScramCredential:
    """Set a user's SCRAM credential (created, or replacing the one it had)."""

    user: str
    credential: ScramCredential


@dataclass(frozen=True, slots=True)
class DeleteScramCredential:
    user: str


@dataclass(frozen=True, slots=True)
class PrepareVoter:
    """``add-voter``'s first step: broker ``node_id`` is to start its Raft member at
    ``raft_address`` (it learns this by applying it) before the membership entry that adds it is
    appended (``voters.py``)."""

    node_id: int
    raft_address: str
    grpc_address: str


@dataclass(frozen=True, slots=True)
class CancelVoter:
    """An ``add-voter`` that will not finish (its membership entry was never appended): broker
    ``node_id`` is no longer joining, and goes back to observing (``voters.py``)."""

    node_id: int


@dataclass(frozen=True, slots=True)
class SetVoters:
    """The voter set after a membership change: rows ``(node_id, raft_address, grpc_address)``.
    Carried inside pysyncobj's membership entry, applied when that entry is (``voters.py``)."""

    voters: tuple[tuple[int, str, str], ...]


Command = (
    RegisterBroker
    | FenceBroker
    | FenceBrokerPartitions
    | UnfenceBroker
    | CreateTopic
    | DeleteTopic
    | AlterTopicConfig
    | AlterPartition
    | ElectLeader
    | MoveLeader
    | ReassignPartitions
    | AddPartitions
    | AllocateProducerIds
    | ReplicasDamaged
    | CreateAcls
    | DeleteAcls
    | UpsertScramCredential
    | DeleteScramCredential
    | PrepareVoter
    | CancelVoter
    | SetVoters
)

_TYPES: dict[str, type[Any]] = {
    "register_broker": RegisterBroker,
    "fence_broker": FenceBroker,
    "fence_broker_partitions": FenceBrokerPartitions,
    "unfence_broker": UnfenceBroker,
    "create_topic": CreateTopic,
    "delete_topic": DeleteTopic,
    "alter_topic_config": AlterTopicConfig,
    "alter_partition": AlterPartition,
    "elect_leader": ElectLeader,
    "move_leader": MoveLeader,
    "reassign_partitions": ReassignPartitions,
    "add_partitions": AddPartitions,
    "allocate_producer_ids": AllocateProducerIds,
    "replicas_damaged": ReplicasDamaged,
    "create_acls": CreateAcls,
    "delete_acls": DeleteAcls,
    "upsert_scram_credential": UpsertScramCredential,
    "delete_scram_credential": DeleteScramCredential,
    "prepare_voter": PrepareVoter,
    "cancel_voter": CancelVoter,
    "set_voters": SetVoters,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def _records_field(
    from_dict: Callable[[Any], Any],
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(encode, decode) of a field holding a tuple of records."""

    def decode(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise CommandDecodeError("a list of records was expected")
        return tuple(from_dict(item) for item in value)

    return (lambda records: [r.to_dict() for r in records]), decode


# the fields that hold records, not plain values: how each is written and read back
_RECORD_FIELDS: dict[tuple[type[Any], str], tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    (CreateAcls, "bindings"): _records_field(AclBinding.from_dict),
    (DeleteAcls, "filters"): _records_field(AclFilter.from_dict),
    (UpsertScramCredential, "credential"): (ScramCredential.to_dict, ScramCredential.from_dict),
}


def encode_command(command: Command) -> bytes:
    cls = type(command)
    body: dict[str, Any] = {"v": COMMAND_VERSION, "t": _NAMES[cls]}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        codec = _RECORD_FIELDS.get((cls, f.name))
        body[f.name] = value if codec is None else codec[0](value)
    return bytes(cbor2.dumps(body))


def _tupled(value: Any) -> Any:
    """cbor2 gives lists back; the dataclasses hold tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def decode_command(data: bytes) -> Command:
    try:
        body = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for garbage
        raise CommandDecodeError(f"not cbor2: {exc}") from exc
    if not isinstance(body, dict):
        raise CommandDecodeError("a command is a cbor2 map")
    if body.get("v") != COMMAND_VERSION:
        raise CommandDecodeError(f"command version {body.get('v')!r} is not {COMMAND_VERSION}")
    cls = _TYPES.get(body.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise CommandDecodeError(f"unknown command type {body.get('t')!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in body:
            codec = _RECORD_FIELDS.get((cls, f.name))
            if codec is None:
                kwargs[f.name] = _tupled(body[f.name])
                continue
            try:
                kwargs[f.name] = codec[1](body[f.name])
            except ValueError as exc:  # AclError, ScramError: the records' own shape checks
                raise CommandDecodeError(f"{body['t']}.{f.name}: {exc}") from exc
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise CommandDecodeError(f"{body['t']} lacks {f.name}")
    try:
        command: Command = cls(**kwargs)
    except TypeError as exc:
        raise CommandDecodeError(str(exc)) from exc
    return command


def encode_result(result: Mapping[str, Any]) -> bytes:
    """A result map as cbor2; its ``error`` (an ``ErrorCode``) is written by name."""
    body = dict(result)
    if "error" in body:
        body["error"] = ErrorCode(body["error"]).name
    return bytes(cbor2.dumps(body))


def decode_result(data: bytes) -> dict[str, Any]:
    """The map ``encode_result`` wrote, its ``error`` an ``ErrorCode`` again (a name this version
    does not know is UNKNOWN_SERVER_ERROR)."""
    body = cbor2.loads(data)
    if not isinstance(body, dict):
        raise CommandDecodeError("a result is a cbor2 map")
    if "error" in body:
        body["error"] = ErrorCode.__members__.get(
            str(body["error"]), ErrorCode.UNKNOWN_SERVER_ERROR
        )
    return body
