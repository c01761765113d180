"""The active controller's shell: turns quorum leadership into decisions and admin answers.

Owned by the broker loop; not thread-safe. While this node's quorum member is the Raft leader
*with a quorum* (``RaftQuorum.is_leader``), it keeps a ``ControllerCore`` (the pure rules in
``raft/controller.py``), answers broker registrations and heartbeats, submits the core's
decisions, runs AlterPartition compare-and-sets, and executes admin calls. The moment leadership
is lost the core is dropped: a new term starts from nothing (and gives every broker a full
session of grace). Decisions take effect only when committed: every answer comes from the
command's result after apply, never from local guesses.

Commands are submitted with ``submit_async`` (pysyncobj's callback runs on its Raft thread) and
resolved on the loop through ``call_soon_threadsafe``.

Every request has a bounded cost (``Limits``, the ``[limits]`` table of the broker config): a
CreateTopics is checked against the partitions per request and per topic *before* any work, its
replica assignment and encoding run in an executor thread (never on the loop, which also answers
heartbeats), the replicas it would add to each broker are checked against the per-broker cap
(lowered to what this process's file-descriptor limit can hold), and no command larger than
``command_bytes_max`` is submitted. Creations run one at a time, so two requests cannot both
pass the per-broker check; each refusal is a typed error whose message names the limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftlog.proto.codes import CodedError, ErrorCode
from raftlog.raft.assignment import AssignmentError, assign_replicas, drain_plan
from raftlog.raft.commands import (
    AddPartitions,
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    CancelVoter,
    Command,
    CreateTopic,
    DeleteTopic,
    ElectLeader,
    FenceBrokerPartitions,
    ReassignPartitions,
    RegisterBroker,
    ReplicasDamaged,
    decode_result,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig, ControllerCore, Steps, Subject
from raftlog.raft.metadata import (
    FENCE_PARTITIONS_PER_COMMAND_MAX,
    PARTITIONS_PER_TOPIC_MAX,
    REASSIGN_MOVES_MAX,
)
from raftlog.raft.metadata_records import TopicRecord
from raftlog.raft.quorum_types import NotLeaderError, QuorumStatus
from raftlog.raft.store import MetadataStore
from raftlog.raft.topic_config import ConfigError, cleanup_policy, validate_configs

from .config import Limits
from .coordinator import OFFSETS_TOPIC
from .tasks import TaskSet

__all__ = ["ActiveController", "ControllerError", "Quorum", "TopicRequest", "fd_replica_budget"]

logger = logging.getLogger(__name__)
PROBE_INTERVAL_MS = 300
REPORTED_PARTITIONS_MAX = 100_000  # partitions in one damage report (a broker holds fewer)
# a replica holds its active .log open (measured: 1 fd) plus closed segments it keeps loaded;
# budget 4 each (Redpanda's topic_fds_per_partition is 5) after what a broker needs besides
FDS_PER_REPLICA = 4
FDS_RESERVED = 512  # sockets, the LMDB store, the Raft journal, logging, gRPC


def fd_replica_budget(fd_limit: int | None = None) -> int:
    """Replicas a broker with this (default: our own soft) RLIMIT_NOFILE can hold."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY or fd_limit < 0:
            return 1 << 30
    return max(0, (fd_limit - FDS_RESERVED) // FDS_PER_REPLICA)


class Quorum(Protocol):
    """What the controller needs of ``raftlog.raft.quorum.RaftQuorum``."""

    def is_leader(self) -> bool: ...

    def leader_id(self) -> int | None: ...

    def submit_async(
        self, command: bytes, timeout_s: float, callback: Callable[[bytes | None, Any], None]
    ) -> None: ...

    def status(self) -> QuorumStatus: ...


class ControllerError(CodedError):
    """An answer of the controller with its ErrorCode (NOT_CONTROLLER, REQUEST_TIMED_OUT, ...)."""


@dataclass(frozen=True, slots=True)
class TopicRequest:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


class ActiveController:
    """See the module docstring."""

    def __init__(
        self,
        node_id: int,
        quorum: Quorum,
        store: MetadataStore,
        config: ControllerConfig,
        clock_ms: Callable[[], int],
        *,
        submit_timeout_s: float = 5.0,
        probe: Callable[[str], Coroutine[Any, Any, bool]] | None = None,
        limits: Limits | None = None,
        fd_limit: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.limits = limits or Limits()
        self.fd_limit = fd_limit  # None: this process's soft RLIMIT_NOFILE
        self._creating = asyncio.Lock()  # one CreateTopic prepared and committed at a time
        self.quorum = quorum
        self.store = store
        self.config = config
        self.clock_ms = clock_ms
        self.tasks = TaskSet("controller")  # decisions and probes in flight
        self.submit_timeout_s = submit_timeout_s
        self.core: ControllerCore | None = None
        self.probe = probe  # address → False only when the connection was refused
        self._offsets_checked: ControllerCore | None = None  # _offsets_upgrade's term
        self._joins_checked: ControllerCore | None = None  # a stale add-voter's, once a term
        # brokers an add-voter of ours is bringing in now (voter_admin.py): their joins are not
        # stale, whenever this term's first tick comes
        self.joins_in_flight: set[int] = set()
        self._probed: dict[int, int] = {}

    # ---- leadership ----------------------------------------------------------------------------

    def active(self) -> ControllerCore:
        """The core, if we may act as controller now; else NOT_CONTROLLER."""
        if not self.quorum.is_leader():
            self.core = None
            raise ControllerError(ErrorCode.NOT_CONTROLLER, self._not_controller_message())
        if self.core is None:
            self.core = ControllerCore(self.config, self.clock_ms())
            logger.info("node %s is the active controller", self.node_id)
        return self.core

    def _not_controller_message(self) -> str:
        leader = self.quorum.leader_id()
        return f"node {self.node_id} is not the controller (the quorum leader is {leader})"

    async def submit(
        self, command: Command | bytes, *, bytes_max: int | None = None
    ) -> dict[str, Any]:
        """Commit one command (or its encoding); its result map (may carry "error") once applied.

        Commands a client asked for pass ``bytes_max`` (``limits.command_bytes_max``): above it
        they are refused with INVALID_REQUEST. Brokers' own reports (damage, ISR changes) are
        not held to it, only to the quorum's cap. A refusal by the quorum at submission (it
        raises for oversized or malformed input) becomes a ControllerError too: nothing of the
        quorum's reaches a caller as an exception of its own.
        """
        data = command if isinstance(command, bytes) else encode_command(command)
        if bytes_max is not None and len(data) > bytes_max:
            raise ControllerError(
                ErrorCode.INVALID_REQUEST,
                f"the metadata command is {len(data)} bytes, above the limit of "
                f"{bytes_max} (limits.command_bytes_max)",
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()

        def done(result: bytes | None, error: Any) -> None:
            def resolve() -> None:
                if future.done():
                    return
                if error is not None or result is None:
                    code = (
                        ErrorCode.NOT_CONTROLLER
                        if isinstance(error, NotLeaderError)
                        else ErrorCode.REQUEST_TIMED_OUT
                    )
                    future.set_exception(ControllerError(code, f"{type(error).__name__}: {error}"))
                else:
                    future.set_result(decode_result(result))

            loop.call_soon_threadsafe(resolve)

        try:
            self.quorum.submit_async(data, self.submit_timeout_s, done)
        except (ValueError, TypeError) as exc:
            raise ControllerError(
                ErrorCode.INVALID_REQUEST, f"the quorum refused the command: {exc}"
            ) from exc
        return await future

    async def tick(self) -> None:
        """Submit what the core decides now (called every few tens of ms on every broker)."""
        if not self.quorum.is_leader():
            if self.core is not None:
                logger.info("node %s is no longer the active controller", self.node_id)
            self.core = None
            return
        core = self.active()
        now = self.clock_ms()
        with self.store.read() as state:
            decisions = core.decisions(state, now)
            overdue = core.overdue(state, now)
            addresses = {b.broker_id: b.address for b in state.brokers.values()}
            upgrade = self._offsets_upgrade(core, state.topics.get(OFFSETS_TOPIC))
            joining = state.joining_voter
        if upgrade is not None:
            self.tasks.spawn(self._decide_once(upgrade))
        if joining is not None and self._joins_checked is not core:
            self._joins_checked = core
            members = {v.node_id for v in self.quorum.status().voters}
            if joining.node_id not in members and joining.node_id not in self.joins_in_flight:
                # an add-voter of an earlier term that never appended its membership entry (a
                # new leader's log is the one that counts): the joiner goes back to observing.
                # Not one this controller prepared itself: an add-voter that made it active
                # (the core is made on first use) can commit its PrepareVoter before this
                # term's first tick, and cancelling it left the joiner never listening.
                self.tasks.spawn(self._decide_once(CancelVoter(joining.node_id)))
        for subject, command in decisions:
            self.tasks.spawn(self._decide(core, subject, command))
        for broker_id, incarnation in overdue:
            if now - self._probed.get(broker_id, -(10**9)) >= PROBE_INTERVAL_MS:
                self._probed[broker_id] = now
                self.tasks.spawn(self._probe(core, broker_id, incarnation, addresses[broker_id]))

    def _offsets_upgrade(
        self, core: ControllerCore, topic: TopicRecord | None
    ) -> AlterTopicConfig | None:
        """Once per term: an offsets topic made before it was compacted becomes compacted, so a
        group's committed offsets outlive retention.ms (only brokers may alter an internal
        topic, so an operator could not)."""
        if self._offsets_checked is core or topic is None:
            return None
        self._offsets_checked = core
        policy = cleanup_policy(topic.config("cleanup.policy")) or frozenset()
        if "compact" in policy:
            return None
        return AlterTopicConfig(OFFSETS_TOPIC, (("cleanup.policy", "compact"),))

    async def _decide_once(self, command: Command) -> None:
        try:
            result = await self.submit(command)
            logger.info("decided %s: %s", command, result)
        except ControllerError as exc:  # the next term tries again
            logger.warning("decision %s not committed: %s", command, exc)

    async def _probe(
        self, core: ControllerCore, broker_id: int, incarnation: int, address: str
    ) -> None:
        """Is anything listening on the late broker's port? Refused means the process is gone."""
        if self.probe is None:
            return
        if await self.probe(address):
            return
        logger.info("broker %s at %s refuses connections: fencing it now", broker_id, address)
        core.declare_dead(broker_id, incarnation)

    async def _decide(
        self, core: ControllerCore, subject: Subject, decided: Command | Steps
    ) -> None:
        """Commit a decision: one command, or ``Steps`` one after another (each submitted once
        the one before it applied), the first failure ending it."""
        commands = decided.commands if isinstance(decided, Steps) else (decided,)
        try:
            for command in commands:
                result = await self.submit(command)
                if "error" in result:
                    logger.warning("decision %s refused: %s", command, result)
                    return
                if not isinstance(command, FenceBrokerPartitions):  # one line per decision
                    logger.info("decided %s", command)
        except ControllerError as exc:
            logger.warning("decision %s not committed: %s", command, exc)
        finally:
            core.completed(subject)

    # ---- broker lifecycle ----------------------------------------------------------------------

    async def register(
        self,
        broker_id: int,
        incarnation: int,
        address: str,
        rack: str | None,
        *,
        unclean: bool = False,
        password_address: str | None = None,
        kafka_address: str | None = None,
    ) -> int:
        self.active()
        await self._fence_previous_incarnation(broker_id, incarnation)
        result = await self.submit(
            RegisterBroker(
                broker_id, address, incarnation, rack, unclean, password_address, kafka_address
            )
        )
        self._raise_for(result)
        return int(result["broker_epoch"])

    async def _fence_previous_incarnation(self, broker_id: int, incarnation: int) -> None:
        """A broker restarted before its previous incarnation was fenced: the RegisterBroker of
        the new one takes the old one's roles away in the same command. With many roles (a
        broker in 60,000 ISRs: one 0.6-0.9 s apply on the Raft thread) they go first, in the
        bounded ``FenceBrokerPartitions`` chunks a fence uses; what changes meanwhile, the
        RegisterBroker still covers."""
        with self.store.read() as state:
            old = state.brokers.get(broker_id)
            if old is None or old.fenced or old.incarnation == incarnation:
                return
            keys = state.roles_of(broker_id)
        step = FENCE_PARTITIONS_PER_COMMAND_MAX
        if len(keys) <= step:
            return
        for i in range(0, len(keys), step):
            chunk = FenceBrokerPartitions(broker_id, old.incarnation, tuple(keys[i : i + step]))
            if "error" in await self.submit(chunk):
                return  # another registration or a fence came first: RegisterBroker decides

    def heartbeat(
        self,
        broker_id: int,
        incarnation: int,
        metadata_version: int,
        reachable: Sequence[int] = (),
        *,
        direct: bool = True,
    ) -> tuple[bool, bool]:
        """(known, fenced) — unknown means: register again. ``reachable``: the peers the broker
        reached lately; ``direct``: False when a relay carried the heartbeat."""
        core = self.active()
        with self.store.read() as state:
            verdict = core.heartbeat(
                state,
                broker_id,
                incarnation,
                metadata_version,
                self.clock_ms(),
                reachable,
                direct=direct,
            )
        return verdict.known, verdict.fenced

    def liveness(self) -> dict[int, tuple[bool, int]]:
        """broker id → (alive, ms since its last heartbeat or -1) as this controller sees it."""
        core = self.active()
        now = self.clock_ms()
        out = {}
        with self.store.read() as state:
            for broker in state.brokers.values():
                alive = core.is_alive(broker.broker_id, broker.incarnation, now)
                out[broker.broker_id] = (alive, core.last_heartbeat_ago_ms(broker.broker_id, now))
        return out

    def replicas_of(self, broker_id: int) -> tuple[int, bytes]:
        """(applied version, the committed state of ``broker_id``'s partitions): for a broker
        whose own quorum member may be cut off (it reaches us through a relay)."""
        self.active()
        with self.store.read() as state:
            return state.version, state.encode_replicas_of(broker_id)

    async def alter_partition(self, command: AlterPartition) -> dict[str, Any]:
        self.active()
        return await self.submit(command)

    async def replicas_damaged(self, command: ReplicasDamaged) -> dict[str, Any]:
        self.active()
        if len(command.partitions) > REPORTED_PARTITIONS_MAX:
            raise ControllerError(
                ErrorCode.INVALID_REQUEST, "too many partitions in one damage report"
            )
        return await self.submit(command)

    async def allocate_producer_ids(self, broker_id: int, count: int) -> dict[str, Any]:
        self.active()
        result = await self.submit(AllocateProducerIds(broker_id, count))
        self._raise_for(result)
        return result

    # ---- admin -------------------------------------------------------------------------------

    def check_create_request(self, requests: Sequence[TopicRequest]) -> dict[str, Any] | None:
        """The refusal of a whole CreateTopics by its partition counts alone, or None.

        O(topics) and no state read: called before any other work.
        """
        total = sum(max(r.partitions, 0) for r in requests)
        limit = self.limits.partitions_per_request_max
        if total > limit:
            return {
                "error": ErrorCode.POLICY_VIOLATION,
                "message": f"the request asks for {total} partitions, above the limit of "
                f"{limit} per request (limits.partitions_per_request_max)",
            }
        return None

    async def create_topic(self, request: TopicRequest, *, validate_only: bool) -> dict[str, Any]:
        self.active()
        refusal = self._check_counts(request)
        if refusal is not None:
            return refusal
        async with self._creating:
            self.active()
            loop = asyncio.get_running_loop()
            # reading every partition, assigning and encoding are O(partitions): not on the loop
            prepared = await loop.run_in_executor(None, self._prepare_create, request)
            if isinstance(prepared, dict):
                return prepared
            if validate_only:
                return {"ok": True, "topic_id": -1}
            return await self.submit(prepared, bytes_max=self.limits.command_bytes_max)

    def _check_counts(self, request: TopicRequest) -> dict[str, Any] | None:
        topic_max = min(self.limits.partitions_per_topic_max, PARTITIONS_PER_TOPIC_MAX)
        if request.partitions < 1:
            return {"error": ErrorCode.INVALID_PARTITIONS, "message": "partitions must be >= 1"}
        if request.partitions > topic_max:
            return {
                "error": ErrorCode.INVALID_PARTITIONS,
                "message": f"{request.partitions} partitions is above the limit of {topic_max} "
                "per topic (limits.partitions_per_topic_max)",
            }
        if request.replication_factor < 1:
            return {"error": ErrorCode.INVALID_REPLICATION_FACTOR, "message": "must be >= 1"}
        if check := self.check_create_request([request]):
            return check
        return None

    def replicas_per_broker_max(self) -> tuple[int, str]:
        """The per-broker replica cap in force, and the words that name it."""
        configured = self.limits.partition_replicas_per_broker_max
        budget = fd_replica_budget(self.fd_limit)
        if budget < configured:
            return budget, (
                f"{budget} replicas per broker (what an open-file limit of "
                f"{self.fd_limit or resource.getrlimit(resource.RLIMIT_NOFILE)[0]} holds at "
                f"{FDS_PER_REPLICA} per replica; limits.partition_replicas_per_broker_max is "
                f"{configured})"
            )
        return configured, (
            f"{configured} replicas per broker (limits.partition_replicas_per_broker_max)"
        )

    def _prepare_create(self, request: TopicRequest) -> dict[str, Any] | bytes:
        """The encoded CreateTopic, or a refusal. Runs in an executor thread."""
        with self.store.read() as state:
            live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
            exists = request.name in state.topics
            counts = state.leader_counts()
            held: dict[int, int] = {}
            for record in state.partitions.values():
                for broker_id in record.replicas:
                    held[broker_id] = held.get(broker_id, 0) + 1
        if exists:
            return {"error": ErrorCode.TOPIC_ALREADY_EXISTS, "message": f"{request.name!r} exists"}
        cap, cap_words = self.replicas_per_broker_max()
        room = sum(max(0, cap - held.get(b, 0)) for b in live)
        wanted = request.partitions * request.replication_factor
        if wanted > room:  # refused before assigning: no arrangement can fit
            return self._over_cap(request, cap_words, held, live)
        try:
            validate_configs(request.configs.items(), request.replication_factor)
            assignment = assign_replicas(
                live, request.partitions, request.replication_factor, leader_counts=counts
            )
        except ConfigError as exc:
            return {"error": ErrorCode.INVALID_CONFIG, "message": str(exc)}
        except AssignmentError as exc:
            return {"error": ErrorCode.INVALID_REPLICATION_FACTOR, "message": str(exc)}
        added: dict[int, int] = {}
        for replicas in assignment:
            for broker_id in replicas:
                added[broker_id] = added.get(broker_id, 0) + 1
        if any(held.get(b, 0) + n > cap for b, n in added.items()):
            return self._over_cap(request, cap_words, held, live)
        command = CreateTopic(
            request.name, tuple(assignment), tuple(sorted(request.configs.items()))
        )
        return encode_command(command)

    @staticmethod
    def _over_cap(
        request: TopicRequest, cap_words: str, held: Mapping[int, int], live: Mapping[int, Any]
    ) -> dict[str, Any]:
        holding = ", ".join(f"{b}: {held.get(b, 0)}" for b in sorted(live))
        return {
            "error": ErrorCode.POLICY_VIOLATION,
            "message": f"{request.partitions} partitions × RF {request.replication_factor} "
            f"would put more than {cap_words} on a broker (replicas held now: {holding})",
        }

    async def delete_topic(self, name: str) -> dict[str, Any]:
        self.active()
        return await self.submit(DeleteTopic(name), bytes_max=self.limits.command_bytes_max)

    async def alter_configs(
        self, name: str, set_configs: Mapping[str, str], delete: list[str]
    ) -> dict[str, Any]:
        self.active()
        command = AlterTopicConfig(name, tuple(sorted(set_configs.items())), tuple(delete))
        return await self.submit(command, bytes_max=self.limits.command_bytes_max)

    # ---- moving partitions -------------------------------------------------------------------

    async def reassign(
        self, moves: Sequence[tuple[str, int, tuple[int, ...]]], throttle: int
    ) -> list[list[Any]]:
        """Start (or cancel: an empty target) reassignments, in commands of at most
        ``REASSIGN_MOVES_MAX`` partitions; each partition's [topic, partition, code, message]."""
        self.active()
        outcomes: list[list[Any]] = []
        for i in range(0, len(moves), REASSIGN_MOVES_MAX):
            chunk = tuple(moves[i : i + REASSIGN_MOVES_MAX])
            result = await self.submit(ReassignPartitions(chunk, throttle))
            self._raise_for(result)
            outcomes += result["partitions"]
        return outcomes

    async def drain(self, broker_id: int, throttle: int) -> list[list[Any]]:
        """Move every replica off ``broker_id`` (``assignment.drain_plan``), then its
        leaderships to the new first replicas, which are in sync already."""
        self.active()
        with self.store.read() as state:
            if broker_id not in state.brokers:
                raise ControllerError(
                    ErrorCode.BROKER_NOT_AVAILABLE, f"broker {broker_id} is not registered"
                )
            live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
            held: dict[int, int] = {}
            lists = []
            for record in state.partitions.values():
                for b in record.replicas:
                    held[b] = held.get(b, 0) + 1
                lists.append((record.topic, record.partition, record.target))
        moves, stuck = drain_plan(lists, live, broker_id, held)
        outcomes = await self.reassign(moves, throttle)
        outcomes += [
            [topic, partition, ErrorCode.INVALID_REPLICA_ASSIGNMENT, "no other live broker"]
            for topic, partition in stuck
        ]
        with self.store.read() as state:
            led = [
                (topic, partition)
                for topic, partition, _ in moves
                if (moved := state.partitions.get((topic, partition))) is not None
                and moved.leader == broker_id
            ]
        await self.elect_leaders(led, preferred=True)
        return outcomes

    async def elect_leaders(
        self, keys: Sequence[tuple[str, int]] | None, *, preferred: bool
    ) -> list[list[Any]]:
        """Elect leaders (``preferred``: the first replicas) for ``keys`` (None: every
        partition), in commands of at most ``REASSIGN_MOVES_MAX`` partitions."""
        self.active()
        if keys is None:
            with self.store.read() as state:
                keys = sorted(state.partitions)
        outcomes: list[list[Any]] = []
        for i in range(0, len(keys), REASSIGN_MOVES_MAX):
            result = await self.submit(
                ElectLeader(tuple(keys[i : i + REASSIGN_MOVES_MAX]), preferred=preferred)
            )
            self._raise_for(result)
            outcomes += [[t, p, code, ""] for t, p, code in result["partitions"]]
        return outcomes

    async def add_partitions(self, name: str, count: int, *, validate_only: bool) -> dict[str, Any]:
        """Grow ``name`` to ``count`` partitions, the new ones assigned as CreateTopic's are."""
        self.active()
        with self.store.read() as state:
            topic = state.topics.get(name)
            if topic is None:
                return {
                    "error": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    "message": f"no topic {name!r}",
                }
            live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
            rf = len(state.partitions[(name, 0)].target)
            counts = state.leader_counts()
        topic_max = min(self.limits.partitions_per_topic_max, PARTITIONS_PER_TOPIC_MAX)
        if not topic.partitions < count <= topic_max:
            return {
                "error": ErrorCode.INVALID_PARTITIONS,
                "message": f"{name} has {topic.partitions} partitions: the new count must be "
                f"more, and at most {topic_max}",
            }
        added = count - topic.partitions
        if added > self.limits.partitions_per_request_max:
            return {
                "error": ErrorCode.POLICY_VIOLATION,
                "message": f"{added} new partitions, above the limit of "
                f"{self.limits.partitions_per_request_max} per request",
            }
        try:
            assignment = assign_replicas(live, added, rf, leader_counts=counts)
        except AssignmentError as exc:
            return {"error": ErrorCode.INVALID_REPLICATION_FACTOR, "message": str(exc)}
        if validate_only:
            return {"ok": True, "partitions": count}
        return await self.submit(
            AddPartitions(name, tuple(assignment)), bytes_max=self.limits.command_bytes_max
        )

    @staticmethod
    def _raise_for(result: dict[str, Any]) -> None:
        if "error" in result:
            raise ControllerError(result["error"], str(result.get("message", "")))
