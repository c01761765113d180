"""The metadata state machine: brokers, topics, partitions, producer-id blocks, ACLs, users.

Pure and deterministic: ``apply(command)`` is a function of the state and the command only — no
clock, no randomness, no IO — so every node of the quorum that applies the same log holds the same
state. Not thread-safe: it is owned by the quorum's apply thread; readers on other threads go
through ``MetadataStore`` (``store.py``), which holds a lock.

The rules (each one has a scenario test in tests/unit/raft/test_metadata.py):

1. ``leader ∈ isr ⊆ replicas`` whenever ``leader != NO_LEADER``. The ISR is empty only when every
   member that was left may have lost data (rule 7); then the partition has no leader.
2. Every leader change bumps ``leader_epoch``; every leader or ISR change bumps
   ``partition_epoch``. Epochs never decrease, also across delete + re-create of a topic name
   (topic ids differ, so a stale replica of the old topic is told apart).
3. Leaders are elected among registered, unfenced brokers: from the ISR, else from the eligible
   leader replicas (ELR, KIP-966). When none is live, the partition goes offline
   (``leader = NO_LEADER``) and a fenced ISR keeps its last member(s) so one of them can lead
   again when it returns (KIP-841). Only a topic with ``unclean.leader.election.enable=true`` may
   elect an out-of-sync live replica instead (and then its ISR is reset to that replica alone:
   acknowledged data may be lost — Kafka 0.8's bug, kept as an opt-in for the chaos harness).
   ELR: a replica that leaves the ISR while the ISR is (then) below ``min.insync.replicas`` holds
   every committed record, because the high watermark does not advance below min ISR (the
   leader's rule in ``cluster/replication.py``); so it stays electable in the ELR until the ISR
   is back at min ISR (then the HW moves on without it and the ELR is cleared).
4. AlterPartition is compare-and-set: it names the requesting leader, its leader epoch and the
   partition epoch its view is based on; any mismatch is refused with a typed error and changes
   nothing. A broker may be added to an ISR only while registered and unfenced.
5. Fencing a broker removes it from every ISR (keeping a last member, rule 3) and moves every
   leadership it held, in the same command — or, for a broker with many partitions, first in
   bounded chunks (``FenceBrokerPartitions``, at most ``FENCE_PARTITIONS_PER_COMMAND_MAX``
   each, while the broker is still registered unfenced), then the ``FenceBroker`` that covers
   the rest. A chunk leaves each partition as the fence would; between chunks the invariants
   hold (the broker is simply live with fewer roles). A broker that registers with a new
   incarnation is fenced as its old incarnation first and stays fenced until the controller
   unfences it.
6. A fenced broker leads nothing.
7. A replica that may have lost acknowledged records — its broker came back from a power loss
   (``RegisterBroker(unclean=True)``) or found damage in its log (``ReplicasDamaged``) — leaves
   the ISR and the ELR, even as their last member, and is never elected while a replica that
   cannot have lost them exists; it becomes safe again only by rejoining the ISR after catching
   up from a leader. When no safe replica is left the partition stays offline rather than lose
   data, remembering the last safe ones (``last_known_elr``), until an operator allows an
   unclean election (``unclean.leader.election.enable=true`` on the topic): then a live last
   known safe replica is preferred, as it holds the most. (KIP-966's automatic "balanced"
   recovery was tried and dropped: after the whole ISR lost power, the last safe replica came
   back with an empty log — its only segment never fsynced — and was elected; 33,336
   acknowledged records vanished without anyone deciding to lose them.)

8. ACL bindings and SCRAM users are checked whole before any is stored (``acl.validate_binding``,
   ``scram.validate_user`` / ``validate_credential``; INVALID_REQUEST) and bounded in number
   (``ACL_BINDINGS_MAX``, ``SCRAM_USERS_MAX``; POLICY_VIOLATION), so no client can grow the state
   without limit. Creating a binding that exists keeps it once; deleting by filters that match
   nothing is not an error. Only credentials are stored, never a password.

Results carry an ErrorCode *name* from ``proto/common.proto`` (``raft`` imports nothing of ours).

Beside it: the records it holds and returns (:mod:`raftlog.raft.metadata_records`), rules 2, 3
and 7 as pure functions (:mod:`raftlog.raft.partition_rules`), and its snapshot and partition
row encodings (:mod:`raftlog.raft.metadata_snapshot`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, assert_never

from raftlog.proto.codes import CodedError, ErrorCode

from .acl import AclBinding, AclError, AclIndex, validate_binding
from .commands import (
    AddPartitions,
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    CancelVoter,
    Command,
    CommandDecodeError,
    CreateAcls,
    CreateTopic,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeader,
    FenceBroker,
    FenceBrokerPartitions,
    MoveLeader,
    PrepareVoter,
    ReassignPartitions,
    RegisterBroker,
    ReplicasDamaged,
    SetVoters,
    UnfenceBroker,
    UpsertScramCredential,
    decode_command,
)
from .metadata_records import (
    NO_LEADER,
    Applied,
    BrokerRecord,
    PartitionRecord,
    TopicPartition,
    TopicRecord,
)
from .metadata_snapshot import (
    SnapshotContents,
    decode_snapshot,
    encode_partition_rows,
    encode_snapshot,
)
from .partition_rules import choose_leader, eligibility, with_roles
from .scram import ScramCredential, ScramError, validate_credential, validate_user
from .topic_config import ConfigError, validate_configs
from .voters import VoterRecord, check_add

__all__ = [
    "ACL_BINDINGS_MAX",
    "ACL_FILTERS_PER_COMMAND_MAX",
    "FENCE_PARTITIONS_PER_COMMAND_MAX",
    "PARTITIONS_PER_TOPIC_MAX",
    "PRODUCER_ID_BLOCK_MAX",
    "REASSIGN_MOVES_MAX",
    "SCRAM_USERS_MAX",
    "MetadataError",
    "MetadataState",
]

PARTITIONS_PER_TOPIC_MAX = 100_000
PRODUCER_ID_BLOCK_MAX = 1_000_000
REASSIGN_MOVES_MAX = 1000  # partitions per ReassignPartitions command (the controller chunks)
REPLICATION_FACTOR_MAX = 16
ACL_BINDINGS_MAX = 10_000
SCRAM_USERS_MAX = 10_000
# a DeleteAcls costs filters × bindings matches on the Raft thread (10k × 64: ~0.1 s)
ACL_FILTERS_PER_COMMAND_MAX = 64
# a FenceBrokerPartitions moves this many at most: ~10-15 ms of apply on the Raft thread
FENCE_PARTITIONS_PER_COMMAND_MAX = 1000
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class MetadataError(CodedError):
    """A command refused by the rules."""


@dataclass(slots=True)
class _Changes:
    partitions: set[TopicPartition] = field(default_factory=set)
    deleted: set[TopicPartition] = field(default_factory=set)
    brokers: set[int] = field(default_factory=set)
    acls_changed: bool = False
    users: set[str] = field(default_factory=set)
    elections: int = 0  # partitions given a new leader
    unclean_elections: int = 0  # ... one outside the ISR and the ELR (data may be lost)


class MetadataState:
    """The replicated metadata. See the module docstring for its rules."""

    def __init__(self) -> None:
        self.version = 0  # commands applied (rejected ones count too: every node counts alike)
        self.brokers: dict[int, BrokerRecord] = {}
        self.topics: dict[str, TopicRecord] = {}
        self.partitions: dict[TopicPartition, PartitionRecord] = {}
        self.next_producer_id = 0
        self.next_topic_id = 1
        self._epoch_floor: dict[TopicPartition, tuple[int, int]] = {}  # survives topic deletion
        self._by_broker: dict[int, set[TopicPartition]] = {}  # broker → partitions it replicates
        self._preferred: dict[int, int] = {}  # broker → partitions whose first replica it is
        # role lookups, so that fencing, unfencing and the controller's scans visit the
        # partitions a change concerns, not all of them (100k partitions: 50-70 ms a scan)
        self._roles: dict[int, set[TopicPartition]] = {}  # broker → partitions it leads or is in
        # the ISR of; NO_LEADER → the partitions without a leader
        self._displaced: set[TopicPartition] = set()  # led, but not by their first replica
        # change these only through commands: the index below is dropped when they change
        self.acls: set[AclBinding] = set()  # len <= ACL_BINDINGS_MAX; each one valid
        self.users: dict[str, ScramCredential] = {}  # len <= SCRAM_USERS_MAX
        self._acl_index: AclIndex | None = None  # built on first use after a change
        # the metadata quorum's voters (voters.py); () until the first change: the bootstrap
        # set of the configs. ids and raft addresses unique; joining never among the voters
        self.voters: tuple[VoterRecord, ...] = ()
        self.joining_voter: VoterRecord | None = None

    # ---- reading ---------------------------------------------------------------------------

    def is_live(self, broker_id: int) -> bool:
        broker = self.brokers.get(broker_id)
        return broker is not None and not broker.fenced

    def partitions_of(self, topic: str) -> list[PartitionRecord]:
        record = self.topics.get(topic)
        if record is None:
            return []
        return [self.partitions[(topic, p)] for p in range(record.partitions)]

    def replicas_of(self, broker_id: int) -> Iterator[PartitionRecord]:
        for key in sorted(self._by_broker.get(broker_id, ())):
            yield self.partitions[key]

    def roles_of(self, broker_id: int) -> list[TopicPartition]:
        """The partitions ``broker_id`` leads or is in the ISR of, in no particular order (a
        copy: O(its roles), no sort)."""
        return list(self._roles.get(broker_id, ()))

    def leaderless(self) -> list[TopicPartition]:
        """The partitions without a leader, sorted."""
        return sorted(self._roles.get(NO_LEADER, ()))

    def led_by(self, broker_id: int) -> list[TopicPartition]:
        """The partitions ``broker_id`` leads, sorted."""
        partitions = self.partitions
        return sorted(
            k for k in self._roles.get(broker_id, ()) if partitions[k].leader == broker_id
        )

    def offline(self) -> list[TopicPartition]:
        """The partitions without a live leader (none, or a fenced or unknown broker), sorted:
        O(those partitions and the roles of brokers that are not live)."""
        keys = set(self._roles.get(NO_LEADER, ()))
        for b, members in self._roles.items():
            if b != NO_LEADER and members and not self.is_live(b):
                keys.update(k for k in members if self.partitions[k].leader == b)
        return sorted(keys)

    def displaced(self) -> list[TopicPartition]:
        """The partitions led by another broker than their first replica, sorted."""
        return sorted(self._displaced)

    def deleted_partitions(self) -> set[TopicPartition]:
        """Partitions a committed DeleteTopic removed (and that were not created again)."""
        return {key for key in self._epoch_floor if key not in self.partitions}

    def acl_index(self) -> AclIndex:
        """The authorizer over the current bindings. Immutable: a reader may take it under the
        store's lock and use it after leaving (a later change builds a new one)."""
        index = self._acl_index
        if index is None:
            index = self._acl_index = AclIndex(self.acls)
        return index

    def leader_counts(self) -> dict[int, int]:
        """Preferred leaderships (first replicas) per broker (kept up to date, not recounted:
        recounting made creating many topics quadratic)."""
        return dict(self._preferred)

    # ---- applying --------------------------------------------------------------------------

    def apply(self, data: bytes) -> Applied:
        """Decode and apply one command. Never raises for bad input: the result says why."""
        self.version += 1
        try:
            command = decode_command(data)
        except CommandDecodeError as exc:
            return Applied({"error": ErrorCode.INVALID_REQUEST, "message": str(exc)})
        return self.apply_command(command)

    def apply_command(self, command: Command) -> Applied:
        changes = _Changes()
        try:
            result = self._dispatch(command, changes)
        except MetadataError as exc:
            # a refused command changes nothing: every check runs before the first write
            return Applied({"error": exc.code, "message": exc.message})
        result.setdefault("ok", True)
        return Applied(
            result,
            frozenset(changes.partitions),
            frozenset(changes.deleted),
            frozenset(changes.brokers),
            changes.acls_changed,
            frozenset(changes.users),
            changes.elections,
            changes.unclean_elections,
        )

    def _dispatch(self, command: Command, changes: _Changes) -> dict[str, Any]:
        match command:
            case RegisterBroker():
                return self._register(command, changes)
            case FenceBroker():
                return self._fence(command, changes)
            case FenceBrokerPartitions():
                return self._fence_partitions(command, changes)
            case UnfenceBroker():
                return self._unfence(command, changes)
            case CreateTopic():
                return self._create_topic(command, changes)
            case DeleteTopic():
                return self._delete_topic(command, changes)
            case AlterTopicConfig():
                return self._alter_config(command)
            case AlterPartition():
                return self._alter_partition(command, changes)
            case ElectLeader():
                return self._elect_leaders(command, changes)
            case MoveLeader():
                return self._move_leader(command, changes)
            case ReassignPartitions():
                return self._reassign_partitions(command, changes)
            case AddPartitions():
                return self._add_partitions(command, changes)
            case AllocateProducerIds():
                return self._allocate_producer_ids(command)
            case ReplicasDamaged():
                return self._replicas_damaged(command, changes)
            case CreateAcls():
                return self._create_acls(command, changes)
            case DeleteAcls():
                return self._delete_acls(command, changes)
            case UpsertScramCredential():
                return self._upsert_scram(command, changes)
            case DeleteScramCredential():
                return self._delete_scram(command, changes)
            case PrepareVoter():
                return self._prepare_voter(command)
            case CancelVoter():
                if self.joining_voter is not None and self.joining_voter.node_id == command.node_id:
                    self.joining_voter = None
                return {}
            case SetVoters():
                return self._set_voters(command)
            case _:
                assert_never(command)

    # ---- brokers ---------------------------------------------------------------------------

    def _register(self, cmd: RegisterBroker, changes: _Changes) -> dict[str, Any]:
        if cmd.broker_id < 0:
            raise MetadataError(ErrorCode.INVALID_REQUEST, "broker ids are >= 0")
        old = self.brokers.get(cmd.broker_id)
        if old is not None and old.incarnation == cmd.incarnation:
            if (old.address, old.rack, old.password_address, old.kafka_address) != (
                cmd.address,
                cmd.rack,
                cmd.password_address,
                cmd.kafka_address,
            ):
                raise MetadataError(
                    ErrorCode.INVALID_REQUEST,
                    f"broker {cmd.broker_id} incarnation {cmd.incarnation} is already "
                    f"registered at {old.address}",
                )
            return {"broker_epoch": old.registered_version, "fenced": old.fenced}
        if old is not None and not old.fenced:
            # the previous incarnation died without being fenced: its in-memory replica state
            # (follower positions, purgatory) is gone, so it loses its roles first
            self._fence_roles(cmd.broker_id, changes)
        self.brokers[cmd.broker_id] = BrokerRecord(
            cmd.broker_id,
            cmd.address,
            cmd.incarnation,
            cmd.rack,
            True,
            self.version,
            cmd.password_address,
            cmd.kafka_address,
        )
        changes.brokers.add(cmd.broker_id)
        if cmd.unclean:
            self._drop_unsafe(cmd.broker_id, self._by_broker.get(cmd.broker_id, ()), changes)
        return {"broker_epoch": self.version, "fenced": True}

    def _replicas_damaged(self, cmd: ReplicasDamaged, changes: _Changes) -> dict[str, Any]:
        self._check_incarnation(cmd.broker_id, cmd.incarnation)
        mine = self._by_broker.get(cmd.broker_id, set())
        keys = [tuple(k) for k in cmd.partitions]
        self._drop_unsafe(cmd.broker_id, [k for k in keys if k in mine], changes)
        return {"partitions": len(keys)}

    def _drop_unsafe(
        self, broker_id: int, keys: Iterable[TopicPartition], changes: _Changes
    ) -> None:
        """Rule 7: the broker's replicas of ``keys`` may lack acknowledged records."""
        for key in sorted(keys):
            record = self.partitions[key]
            isr = tuple(b for b in record.isr if b != broker_id)
            leader = NO_LEADER if record.leader == broker_id else record.leader
            self._transition(record, leader, isr, changes, exclude=broker_id, unsafe=broker_id)

    def _check_incarnation(self, broker_id: int, incarnation: int) -> BrokerRecord:
        broker = self.brokers.get(broker_id)
        if broker is None:
            raise MetadataError(
                ErrorCode.BROKER_NOT_AVAILABLE, f"broker {broker_id} is not registered"
            )
        if broker.incarnation != incarnation:
            raise MetadataError(
                ErrorCode.STALE_BROKER_EPOCH,
                f"broker {broker_id} is at incarnation {broker.incarnation}, not {incarnation}",
            )
        return broker

    def _fence(self, cmd: FenceBroker, changes: _Changes) -> dict[str, Any]:
        broker = self._check_incarnation(cmd.broker_id, cmd.incarnation)
        if broker.fenced:
            return {"changed": False}
        self.brokers[cmd.broker_id] = replace(broker, fenced=True)
        changes.brokers.add(cmd.broker_id)
        self._fence_roles(cmd.broker_id, changes)
        return {"changed": True}

    def _fence_partitions(self, cmd: FenceBrokerPartitions, changes: _Changes) -> dict[str, Any]:
        if len(cmd.partitions) > FENCE_PARTITIONS_PER_COMMAND_MAX or not all(
            isinstance(k, tuple) and len(k) == 2 and isinstance(k[0], str) and type(k[1]) is int
            for k in cmd.partitions
        ):
            raise MetadataError(
                ErrorCode.INVALID_REQUEST,
                f"at most {FENCE_PARTITIONS_PER_COMMAND_MAX} (topic, partition) pairs per "
                "FenceBrokerPartitions",
            )
        broker = self._check_incarnation(cmd.broker_id, cmd.incarnation)
        if broker.fenced:  # a fenced broker holds no roles: the fence already covered these
            return {"partitions": 0}
        mine = self._by_broker.get(cmd.broker_id, set())
        keys = sorted({(topic, p) for topic, p in cmd.partitions if (topic, p) in mine})
        self._leave_roles(cmd.broker_id, keys, changes)
        return {"partitions": len(keys)}

    def _fence_roles(self, broker_id: int, changes: _Changes) -> None:
        """Take broker_id out of every ISR (keeping a last member) and every leadership, and
        elect where nobody leads among its replicas. Only those partitions are visited (the
        role lookups): after a fence's chunks the FenceBroker finds few of them (visiting all
        60,000 of a broker's replicas took 0.2-0.5 s on the Raft thread)."""
        keys = self._roles.get(broker_id, set()) | (
            self._roles.get(NO_LEADER, set()) & self._by_broker.get(broker_id, set())
        )
        self._leave_roles(broker_id, sorted(keys), changes)

    def _leave_roles(
        self, broker_id: int, keys: Iterable[TopicPartition], changes: _Changes
    ) -> None:
        """Take broker_id out of the ISR (keeping a last member) and leadership of ``keys``."""
        for key in keys:
            record = self.partitions[key]
            isr = tuple([b for b in record.isr if b != broker_id]) or record.isr
            leader = NO_LEADER if record.leader == broker_id else record.leader
            self._transition(record, leader, isr, changes, exclude=broker_id)

    def _unfence(self, cmd: UnfenceBroker, changes: _Changes) -> dict[str, Any]:
        broker = self._check_incarnation(cmd.broker_id, cmd.incarnation)
        if not broker.fenced:
            return {"changed": False}
        self.brokers[cmd.broker_id] = replace(broker, fenced=False)
        changes.brokers.add(cmd.broker_id)
        offline = self._roles.get(NO_LEADER, set()) & self._by_broker.get(cmd.broker_id, set())
        for key in sorted(offline):  # elections in one order on every node
            record = self.partitions[key]
            self._transition(record, NO_LEADER, record.isr, changes)
        return {"changed": True}

    # ---- topics ----------------------------------------------------------------------------

    def _create_topic(self, cmd: CreateTopic, changes: _Changes) -> dict[str, Any]:
        if not _TOPIC_NAME.match(cmd.name) or cmd.name in (".", ".."):
            raise MetadataError(
                ErrorCode.INVALID_TOPIC_EXCEPTION,
                f"invalid topic name {cmd.name!r}: 1-249 of [A-Za-z0-9._-], not . or ..",
            )
        if cmd.name in self.topics:
            raise MetadataError(
                ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {cmd.name!r} already exists"
            )
        if not 1 <= len(cmd.assignment) <= PARTITIONS_PER_TOPIC_MAX:
            raise MetadataError(
                ErrorCode.INVALID_PARTITIONS,
                f"partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}]",
            )
        rf = len(cmd.assignment[0])
        self._check_assignment(cmd.assignment, 0)
        configs = tuple(sorted(dict(cmd.configs).items()))
        try:
            validate_configs(configs, rf)
        except ConfigError as exc:
            raise MetadataError(ErrorCode.INVALID_CONFIG, str(exc)) from exc
        topic_id = self.next_topic_id
        self.next_topic_id += 1
        self.topics[cmd.name] = TopicRecord(cmd.name, topic_id, len(cmd.assignment), rf, configs)
        self._new_partitions(cmd.name, topic_id, cmd.assignment, 0, changes)
        return {"topic_id": topic_id}

    def _check_assignment(self, assignment: tuple[tuple[int, ...], ...], first: int) -> None:
        """Every partition: the same number (1-16) of distinct, registered brokers."""
        rf = len(assignment[0])
        for p, replicas in enumerate(assignment, first):
            if (
                len(replicas) != rf
                or not 1 <= rf <= REPLICATION_FACTOR_MAX
                or len(set(replicas)) != rf
            ):
                raise MetadataError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"partition {p}: replicas {list(replicas)} must be {rf} distinct brokers",
                )
            unknown = [b for b in replicas if b not in self.brokers]
            if unknown:
                raise MetadataError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"partition {p}: unknown broker(s) {unknown}",
                )

    def _new_partitions(
        self,
        name: str,
        topic_id: int,
        assignment: tuple[tuple[int, ...], ...],
        first: int,
        changes: _Changes,
    ) -> None:
        for p, replicas in enumerate(assignment, first):
            key = (name, p)
            live = [b for b in replicas if self.is_live(b)]
            leader = live[0] if live else NO_LEADER
            floor_leader, floor_partition = self._epoch_floor.get(key, (-1, -1))
            # every replica is empty, so every replica is in sync
            record = PartitionRecord(
                name,
                p,
                topic_id,
                tuple(replicas),
                tuple(replicas),
                leader,
                floor_leader + 1,
                floor_partition + 1,
            )
            self._index(record)
            changes.partitions.add(key)

    def _delete_topic(self, cmd: DeleteTopic, changes: _Changes) -> dict[str, Any]:
        topic = self.topics.pop(cmd.name, None)
        if topic is None:
            raise MetadataError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {cmd.name!r}")
        for p in range(topic.partitions):
            key = (cmd.name, p)
            record = self.partitions.pop(key)
            self._index_roles(record, None)
            self._epoch_floor[key] = (record.leader_epoch, record.partition_epoch)
            for b in record.replicas:
                self._by_broker[b].discard(key)
            self._preferred[record.replicas[0]] -= 1
            changes.deleted.add(key)
        return {"topic_id": topic.topic_id}

    def _alter_config(self, cmd: AlterTopicConfig) -> dict[str, Any]:
        topic = self.topics.get(cmd.name)
        if topic is None:
            raise MetadataError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {cmd.name!r}")
        configs = dict(topic.configs)
        for name in cmd.delete_configs:
            configs.pop(name, None)
        configs.update(dict(cmd.set_configs))
        merged = tuple(sorted(configs.items()))
        try:
            validate_configs(merged, topic.replication_factor)
        except ConfigError as exc:
            raise MetadataError(ErrorCode.INVALID_CONFIG, str(exc)) from exc
        self.topics[cmd.name] = replace(topic, configs=merged)
        return {}

    # ---- partitions ------------------------------------------------------------------------

    def _partition(self, topic: str, partition: int) -> PartitionRecord:
        record = self.partitions.get((topic, partition))
        if record is None:
            raise MetadataError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{partition}"
            )
        return record

    def _alter_partition(self, cmd: AlterPartition, changes: _Changes) -> dict[str, Any]:
        record = self._partition(cmd.topic, cmd.partition)
        if cmd.broker_id != record.leader:
            raise MetadataError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                f"broker {cmd.broker_id} does not lead {cmd.topic}-{cmd.partition} "
                f"(leader {record.leader})",
            )
        if cmd.leader_epoch < record.leader_epoch:
            raise MetadataError(
                ErrorCode.FENCED_LEADER_EPOCH,
                f"leader epoch {cmd.leader_epoch} is older than {record.leader_epoch}",
            )
        if cmd.leader_epoch > record.leader_epoch:
            raise MetadataError(
                ErrorCode.UNKNOWN_LEADER_EPOCH,
                f"leader epoch {cmd.leader_epoch} is newer than {record.leader_epoch}",
            )
        if cmd.partition_epoch != record.partition_epoch:
            raise MetadataError(
                ErrorCode.INVALID_UPDATE_VERSION,
                f"partition epoch {cmd.partition_epoch} is stale (now {record.partition_epoch})",
            )
        wanted = set(cmd.isr)
        if (
            len(wanted) != len(cmd.isr)
            or record.leader not in wanted
            or not wanted <= set(record.replicas)
            or len(cmd.incarnations) not in (0, len(cmd.isr))
        ):
            raise MetadataError(
                ErrorCode.INVALID_REQUEST,
                f"ISR {list(cmd.isr)} must hold the leader and only replicas "
                f"{list(record.replicas)}, with an incarnation for each member or none",
            )
        joining = wanted - set(record.isr)
        ineligible = [b for b in joining if not self.is_live(b)]
        if ineligible:
            raise MetadataError(
                ErrorCode.INELIGIBLE_REPLICA, f"fenced or unregistered broker(s) {ineligible}"
            )
        # KIP-903: a broker joins on the fetches of the incarnation the leader saw; if it has
        # restarted since (after a power loss it may hold less), that progress is not its own
        restarted = [
            (b, incarnation, self.brokers[b].incarnation)
            for b, incarnation in zip(cmd.isr, cmd.incarnations, strict=False)  # () or equal
            if b in joining and incarnation != -1 and incarnation != self.brokers[b].incarnation
        ]
        if restarted:
            raise MetadataError(
                ErrorCode.INELIGIBLE_REPLICA,
                "broker(s) restarted since the leader saw them fetch (broker, seen, now): "
                f"{restarted}",
            )
        isr = tuple(b for b in record.replicas if b in wanted)
        new = self._maybe_complete(
            self._set_partition(record, record.leader, isr, changes), changes
        )
        return {
            "partition_epoch": new.partition_epoch,
            "isr": list(new.isr),
            "leader_epoch": new.leader_epoch,
        }

    def _elect_leaders(self, cmd: ElectLeader, changes: _Changes) -> dict[str, Any]:
        outcomes = []
        for topic, partition in cmd.partitions:
            record = self.partitions.get((topic, partition))
            if record is None:
                outcomes.append([topic, partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION])
                continue
            if cmd.preferred:
                preferred = record.replicas[0]
                if record.leader == preferred:
                    outcomes.append([topic, partition, ErrorCode.NONE])
                elif preferred in record.isr and self.is_live(preferred):
                    self._set_partition(record, preferred, record.isr, changes)
                    outcomes.append([topic, partition, ErrorCode.NONE])
                else:
                    outcomes.append([topic, partition, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE])
                continue
            if record.leader != NO_LEADER and self.is_live(record.leader):
                outcomes.append([topic, partition, ErrorCode.NONE])
                continue
            new = self._transition(record, NO_LEADER, record.isr, changes)
            if new.leader == NO_LEADER:
                outcomes.append([topic, partition, ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE])
                continue
            outcomes.append([topic, partition, ErrorCode.NONE])
        return {"partitions": outcomes}

    def _move_leader(self, cmd: MoveLeader, changes: _Changes) -> dict[str, Any]:
        record = self._partition(cmd.topic, cmd.partition)
        if cmd.leader_epoch != record.leader_epoch:
            raise MetadataError(
                ErrorCode.FENCED_LEADER_EPOCH,
                f"leader epoch {cmd.leader_epoch} is not the current {record.leader_epoch}",
            )
        safe = set(record.isr) | set(record.elr)
        min_isr = self.topics[record.topic].min_insync_replicas
        wanted = set(cmd.isr)
        if (
            len(wanted) != len(cmd.isr)
            or cmd.leader not in wanted
            or not wanted <= safe
            or len(wanted) < min_isr
        ):
            raise MetadataError(
                ErrorCode.INVALID_REQUEST,
                f"leader {cmd.leader} and ISR {list(cmd.isr)} must be drawn from the ISR and ELR "
                f"{sorted(safe)}, at least {min_isr} of them",
            )
        down = [b for b in cmd.isr if not self.is_live(b)]
        if down:
            raise MetadataError(
                ErrorCode.INELIGIBLE_REPLICA, f"fenced or unregistered broker(s) {down}"
            )
        isr = tuple(b for b in record.replicas if b in wanted)
        new = self._transition(record, cmd.leader, isr, changes)
        return {"leader": new.leader, "leader_epoch": new.leader_epoch}

    # ---- reassignment (KIP-455) ---------------------------------------------------------------

    def _reassign_partitions(self, cmd: ReassignPartitions, changes: _Changes) -> dict[str, Any]:
        if len(cmd.moves) > REASSIGN_MOVES_MAX:
            raise MetadataError(
                ErrorCode.INVALID_REQUEST,
                f"{len(cmd.moves)} partitions in one reassignment, above {REASSIGN_MOVES_MAX}",
            )
        if not isinstance(cmd.throttle, int) or cmd.throttle < 0:
            raise MetadataError(ErrorCode.INVALID_REQUEST, "throttle is bytes/s >= 0")
        outcomes = []
        for topic, partition, target in cmd.moves:
            try:
                self._reassign(
                    self._partition(topic, partition), tuple(target), cmd.throttle, changes
                )
                outcomes.append([topic, partition, ErrorCode.NONE, ""])
            except MetadataError as exc:  # this partition only: every check precedes its write
                outcomes.append([topic, partition, exc.code, exc.message])
        return {"partitions": outcomes}

    def _reassign(
        self, record: PartitionRecord, target: tuple[int, ...], throttle: int, changes: _Changes
    ) -> None:
        original = record.original
        if not target:  # cancel: back to the replicas it had, the added ones leave
            if not record.adding and not record.removing:
                raise MetadataError(
                    ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                    f"{record.topic}-{record.partition} is not being reassigned",
                )
            self._finish(record, original, changes)
            return
        if (
            len(set(target)) != len(target)
            or len(target) > REPLICATION_FACTOR_MAX
            or not all(isinstance(b, int) for b in target)
        ):
            raise MetadataError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"replicas {list(target)} must be 1-{REPLICATION_FACTOR_MAX} distinct brokers",
            )
        unknown = [b for b in target if b not in self.brokers]
        if unknown:
            raise MetadataError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"unknown broker(s) {unknown}"
            )
        replicas = target + tuple(b for b in original if b not in target)
        new = replace(
            record,
            replicas=replicas,
            adding=tuple(b for b in target if b not in original),
            removing=tuple(b for b in original if b not in target),
            throttle=throttle if set(target) != set(original) else 0,
        )
        if new == record:
            return
        # the ISR and ELR keep their members, in the new replica order
        new = replace(
            new,
            isr=tuple(b for b in replicas if b in record.isr),
            elr=tuple(b for b in replicas if b in record.elr),
            last_known_elr=tuple(b for b in replicas if b in record.last_known_elr),
            partition_epoch=record.partition_epoch + 1,
        )
        self._replace(record, new, changes)
        self._maybe_complete(new, changes)

    def _maybe_complete(self, record: PartitionRecord, changes: _Changes) -> PartitionRecord:
        """A reassignment completes when every target replica is in the ISR."""
        if not record.adding and not record.removing:
            return record
        target = record.target
        if not all(b in record.isr for b in target):
            return record
        return self._finish(record, target, changes)

    def _finish(
        self, record: PartitionRecord, replicas: tuple[int, ...], changes: _Changes
    ) -> PartitionRecord:
        """Settle on ``replicas`` (the target, or the original on a cancel): the others leave
        the ISR and the ELR, and a leader among them hands over to an ISR member that stays."""
        isr = tuple(b for b in replicas if b in record.isr)
        settled = replace(
            record,
            replicas=replicas,
            adding=(),
            removing=(),
            throttle=0,
            isr=isr,
            elr=tuple(b for b in replicas if b in record.elr),
            last_known_elr=tuple(b for b in replicas if b in record.last_known_elr),
            partition_epoch=record.partition_epoch + 1,
        )
        self._replace(record, settled, changes)
        if record.leader in replicas:
            return settled
        # the leader leaves: elect among the staying ISR (rule 3), preferring the first replica
        leader = next((b for b in isr if self.is_live(b)), NO_LEADER)
        if leader == NO_LEADER:
            return self._transition(settled, NO_LEADER, isr, changes)
        return self._set_partition(settled, leader, isr, changes)

    def _replace(self, old: PartitionRecord, new: PartitionRecord, changes: _Changes) -> None:
        """Swap a partition's record for one with other replicas (the lookups follow)."""
        key = old.key
        by_broker = self._by_broker
        for b in old.replicas:
            if b not in new.replicas:
                by_broker[b].discard(key)
        for b in new.replicas:
            by_broker.setdefault(b, set()).add(key)
        if old.replicas[0] != new.replicas[0]:
            self._preferred[old.replicas[0]] -= 1
            self._preferred[new.replicas[0]] = self._preferred.get(new.replicas[0], 0) + 1
        self.partitions[key] = new
        self._index_roles(old, new)
        changes.partitions.add(key)

    def _add_partitions(self, cmd: AddPartitions, changes: _Changes) -> dict[str, Any]:
        topic = self.topics.get(cmd.name)
        if topic is None:
            raise MetadataError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {cmd.name!r}")
        total = topic.partitions + len(cmd.assignment)
        if not cmd.assignment or total > PARTITIONS_PER_TOPIC_MAX:
            raise MetadataError(
                ErrorCode.INVALID_PARTITIONS,
                f"{cmd.name} has {topic.partitions} partitions: add 1 to "
                f"{PARTITIONS_PER_TOPIC_MAX - topic.partitions} more",
            )
        self._check_assignment(cmd.assignment, topic.partitions)
        self.topics[cmd.name] = replace(topic, partitions=total)
        self._new_partitions(cmd.name, topic.topic_id, cmd.assignment, topic.partitions, changes)
        return {"partitions": total}

    def electable(self, record: PartitionRecord) -> bool:
        """Would an election give this leaderless partition a leader now?"""
        leader, _ = self._choose_leader(record, record.isr, record.elr, record.last_known_elr)
        return leader != NO_LEADER

    def _transition(
        self,
        record: PartitionRecord,
        leader: int,
        isr: tuple[int, ...],
        changes: _Changes,
        *,
        exclude: int = NO_LEADER,
        unsafe: int = NO_LEADER,
    ) -> PartitionRecord:
        """Move to ``isr`` (``leader`` kept, or elected when NO_LEADER), keeping the ELR and the
        last known safe replicas right (rules 3 and 7). ``exclude`` may not be elected;
        ``unsafe`` may have lost data: it leaves the ELR too."""
        elr, last_known = self._eligibility(record, isr, unsafe)
        if leader == NO_LEADER:
            leader, elected_isr = self._choose_leader(record, isr, elr, last_known, exclude)
            if elected_isr != isr:
                isr = elected_isr
                elr, last_known = self._eligibility(record, isr, unsafe)
        return self._set_partition(record, leader, isr, changes, elr, last_known)

    def _eligibility(
        self, record: PartitionRecord, isr: tuple[int, ...], unsafe: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        min_isr = self.topics[record.topic].min_insync_replicas
        return eligibility(record, isr, min_isr=min_isr, unsafe=unsafe)

    def _choose_leader(
        self,
        record: PartitionRecord,
        isr: tuple[int, ...],
        elr: tuple[int, ...],
        last_known: tuple[int, ...],
        exclude: int = NO_LEADER,
    ) -> tuple[int, tuple[int, ...]]:
        """Rule 3's choice among live brokers other than ``exclude``."""
        return choose_leader(
            record,
            isr,
            elr,
            last_known,
            live=lambda b: b != exclude and self.is_live(b),
            unclean=lambda: self.topics[record.topic].unclean_leader_election,
        )

    def _set_partition(
        self,
        record: PartitionRecord,
        leader: int,
        isr: tuple[int, ...],
        changes: _Changes,
        elr: tuple[int, ...] | None = None,
        last_known: tuple[int, ...] | None = None,
    ) -> PartitionRecord:
        if elr is None or last_known is None:
            elr, last_known = self._eligibility(record, isr, NO_LEADER)
        new = with_roles(record, leader, isr, elr, last_known)
        if new is not record:
            self.partitions[record.key] = new
            self._index_roles(record, new)
            changes.partitions.add(record.key)
            if leader not in (record.leader, NO_LEADER):
                changes.elections += 1
                changes.unclean_elections += leader not in record.isr and leader not in record.elr
        return new

    # ---- producer ids ------------------------------------------------------------------------

    def _allocate_producer_ids(self, cmd: AllocateProducerIds) -> dict[str, Any]:
        if cmd.broker_id not in self.brokers:
            raise MetadataError(
                ErrorCode.BROKER_NOT_AVAILABLE, f"broker {cmd.broker_id} is unknown"
            )
        if not 1 <= cmd.count <= PRODUCER_ID_BLOCK_MAX:
            raise MetadataError(
                ErrorCode.INVALID_REQUEST, f"count must be in [1, {PRODUCER_ID_BLOCK_MAX}]"
            )
        start = self.next_producer_id
        self.next_producer_id += cmd.count
        return {"start": start, "count": cmd.count}

    # ---- ACLs and users (rule 8) ------------------------------------------------------------

    def _create_acls(self, cmd: CreateAcls, changes: _Changes) -> dict[str, Any]:
        if len(cmd.bindings) > ACL_BINDINGS_MAX:  # before validating each: bound the work
            raise MetadataError(
                ErrorCode.POLICY_VIOLATION, f"more than {ACL_BINDINGS_MAX} bindings in one request"
            )
        for i, binding in enumerate(cmd.bindings):
            try:
                validate_binding(binding)
            except AclError as exc:
                raise MetadataError(ErrorCode.INVALID_REQUEST, f"binding {i}: {exc}") from exc
        new = set(cmd.bindings) - self.acls
        if len(self.acls) + len(new) > ACL_BINDINGS_MAX:
            raise MetadataError(
                ErrorCode.POLICY_VIOLATION,
                f"{len(new)} more bindings would pass the limit of {ACL_BINDINGS_MAX} "
                f"({len(self.acls)} stored)",
            )
        if new:
            self.acls |= new
            self._acl_index = None
            changes.acls_changed = True
        return {"created": len(new)}

    def _delete_acls(self, cmd: DeleteAcls, changes: _Changes) -> dict[str, Any]:
        if len(cmd.filters) > ACL_FILTERS_PER_COMMAND_MAX:
            raise MetadataError(
                ErrorCode.INVALID_REQUEST,
                f"at most {ACL_FILTERS_PER_COMMAND_MAX} filters per request",
            )
        gone = sorted(b for b in self.acls if any(f.matches(b) for f in cmd.filters))
        if gone:
            self.acls.difference_update(gone)
            self._acl_index = None
            changes.acls_changed = True
        return {"deleted": [b.to_dict() for b in gone]}

    def _upsert_scram(self, cmd: UpsertScramCredential, changes: _Changes) -> dict[str, Any]:
        try:
            validate_user(cmd.user)
            validate_credential(cmd.credential)
        except ScramError as exc:
            raise MetadataError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
        created = cmd.user not in self.users
        if created and len(self.users) >= SCRAM_USERS_MAX:
            raise MetadataError(
                ErrorCode.POLICY_VIOLATION,
                f"the cluster holds the most users allowed ({SCRAM_USERS_MAX})",
            )
        self.users[cmd.user] = cmd.credential
        changes.users.add(cmd.user)
        return {"created": created}

    def _delete_scram(self, cmd: DeleteScramCredential, changes: _Changes) -> dict[str, Any]:
        try:
            validate_user(cmd.user)  # also refuses a non-string before it is used as a key
        except ScramError as exc:
            raise MetadataError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
        if self.users.pop(cmd.user, None) is None:
            raise MetadataError(
                ErrorCode.RESOURCE_NOT_FOUND, f"no SCRAM credential for {cmd.user!r}"
            )
        changes.users.add(cmd.user)
        return {}

    # ---- the metadata quorum's voters (voters.py) ---------------------------------------------

    def _prepare_voter(self, cmd: PrepareVoter) -> dict[str, Any]:
        new = VoterRecord(cmd.node_id, cmd.raft_address, cmd.grpc_address)
        why = check_add(self.voters, new)
        if why is not None:
            raise MetadataError(ErrorCode.INVALID_REQUEST, why)
        self.joining_voter = new
        return {}

    def _set_voters(self, cmd: SetVoters) -> dict[str, Any]:
        # never refused for its content: it rides in the membership entry, which pysyncobj
        # applies whatever we answer (the controller checked the change before proposing it)
        try:
            voters = tuple(sorted(VoterRecord(int(i), str(r), str(g)) for i, r, g in cmd.voters))
        except (TypeError, ValueError) as exc:
            raise MetadataError(ErrorCode.INVALID_REQUEST, f"bad voter rows: {exc}") from exc
        self.voters = voters
        joining = self.joining_voter
        if joining is not None and any(v.node_id == joining.node_id for v in voters):
            self.joining_voter = None
        return {"voters": [v.node_id for v in voters]}

    # ---- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The replicated state as bytes (format: :mod:`raftlog.raft.metadata_snapshot`)."""
        return self.snapshot_encoder()()

    def snapshot_encoder(self) -> Callable[[], bytes]:
        """The state as it is now, captured for :meth:`snapshot` to encode later, on any thread,
        while this state goes on applying commands. The capture copies the containers, not the
        records (every record is frozen): ~5 ms at 100k partitions, against ~200 ms to encode."""
        contents = SnapshotContents(
            version=self.version,
            next_producer_id=self.next_producer_id,
            next_topic_id=self.next_topic_id,
            brokers=list(self.brokers.values()),
            topics=list(self.topics.values()),
            partitions=list(self.partitions.values()),
            epoch_floor=dict(self._epoch_floor),
            acls=frozenset(self.acls),
            users=dict(self.users),
            voters=self.voters,
            joining_voter=self.joining_voter,
        )
        return partial(encode_snapshot, contents)

    @classmethod
    def from_snapshot(cls, data: bytes) -> MetadataState:
        contents = decode_snapshot(data)
        state = cls()
        state.version = contents.version
        state.next_producer_id = contents.next_producer_id
        state.next_topic_id = contents.next_topic_id
        state.brokers = {b.broker_id: b for b in contents.brokers}
        state.topics = {t.name: t for t in contents.topics}
        for record in contents.partitions:
            state._index(record)
        state._epoch_floor = dict(contents.epoch_floor)
        state.acls = set(contents.acls)
        state.users = dict(contents.users)
        state.voters = tuple(contents.voters)
        state.joining_voter = contents.joining_voter
        return state

    def encode_replicas_of(self, broker_id: int) -> bytes:
        """The committed state of every partition ``broker_id`` replicates (cbor2 rows, as in
        a snapshot): what a broker whose own quorum member is cut off acts on meanwhile."""
        return encode_partition_rows(self.replicas_of(broker_id))

    def _index(self, record: PartitionRecord) -> None:
        """Add a new partition to the lookups (by key, by replica, preferred leader counts)."""
        key = record.key
        self.partitions[key] = record
        by_broker = self._by_broker
        for b in record.replicas:
            members = by_broker.get(b)
            if members is None:
                members = by_broker[b] = set()
            members.add(key)
        first = record.replicas[0]
        self._preferred[first] = self._preferred.get(first, 0) + 1
        self._index_roles(None, record)

    def _index_roles(self, old: PartitionRecord | None, new: PartitionRecord | None) -> None:
        """Keep ``_roles`` and ``_displaced`` right as a partition's record changes (None: it
        did not exist / no longer exists)."""
        before = () if old is None else (old.leader, *old.isr)
        after = () if new is None else (new.leader, *new.isr)
        if before != after:
            roles = self._roles
            key = (new or old).key  # type: ignore[union-attr]
            for b in before:
                if b not in after:
                    roles[b].discard(key)
            for b in after:
                if b not in before:
                    members = roles.get(b)
                    if members is None:
                        members = roles[b] = set()
                    members.add(key)
        if new is not None and new.leader not in (NO_LEADER, new.replicas[0]):
            self._displaced.add(new.key)
        elif old is not None:
            self._displaced.discard(old.key)

    # ---- checking ------------------------------------------------------------------------------

    def violations(self) -> Iterable[str]:
        """Every broken rule, as text (used by tests and by the broker's self-check)."""
        for record in self.partitions.values():
            name = f"{record.topic}-{record.partition}"
            if not record.isr and record.leader != NO_LEADER:
                yield f"{name}: empty ISR with leader {record.leader}"
            if set(record.elr) & set(record.isr) or not set(record.elr) <= set(record.replicas):
                yield f"{name}: ELR {record.elr} overlaps ISR {record.isr} or leaves the replicas"
            if record.last_known_elr and (record.isr or record.elr):
                yield f"{name}: last known ELR {record.last_known_elr} beside a safe replica"
            if not set(record.isr) <= set(record.replicas):
                yield f"{name}: ISR {record.isr} not within replicas {record.replicas}"
            moving = set(record.adding) | set(record.removing)
            if not moving <= set(record.replicas) or set(record.adding) & set(record.removing):
                yield f"{name}: adding {record.adding} / removing {record.removing} are wrong"
            if record.leader != NO_LEADER:
                if record.leader not in record.isr:
                    yield f"{name}: leader {record.leader} not in ISR {record.isr}"
                if not self.is_live(record.leader):
                    yield f"{name}: leader {record.leader} is fenced or unknown"
        if len(self.acls) > ACL_BINDINGS_MAX:
            yield f"{len(self.acls)} ACL bindings, more than {ACL_BINDINGS_MAX}"
        for binding in self.acls:
            try:
                validate_binding(binding)
            except AclError as exc:
                yield f"ACL binding {binding}: {exc}"
        if len(self.users) > SCRAM_USERS_MAX:
            yield f"{len(self.users)} SCRAM users, more than {SCRAM_USERS_MAX}"
        for user, credential in self.users.items():
            try:
                validate_user(user)
                validate_credential(credential)
            except ScramError as exc:
                yield f"SCRAM user {user!r}: {exc}"
