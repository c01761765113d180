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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from raftlog.raft.assignment import AssignmentError, assign_replicas
from raftlog.raft.commands import (
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    Command,
    CreateTopic,
    DeleteTopic,
    RegisterBroker,
    ReplicasDamaged,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig, ControllerCore
from raftlog.raft.store import MetadataStore
from raftlog.raft.topic_config import ConfigError, validate_configs

__all__ = ["ActiveController", "ControllerError", "Quorum"]

log = logging.getLogger(__name__)
PROBE_INTERVAL_MS = 300
REPORTED_PARTITIONS_MAX = 100_000  # partitions in one damage report (a broker holds fewer)


class Quorum(Protocol):
    """What the controller needs of ``raftlog.raft.adapter.RaftQuorum``."""

    def is_leader(self) -> bool: ...

    def leader_id(self) -> int | None: ...

    def submit_async(
        self, command: bytes, timeout_s: float, callback: Callable[[bytes | None, Any], None]
    ) -> None: ...


class ControllerError(Exception):
    """An answer with an ErrorCode name (NOT_CONTROLLER, REQUEST_TIMED_OUT, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    ) -> None:
        self.node_id = node_id
        self.quorum = quorum
        self.store = store
        self.config = config
        self.clock_ms = clock_ms
        self.submit_timeout_s = submit_timeout_s
        self.core: ControllerCore | None = None
        self.decisions_submitted = 0
        self.probe = probe  # address → False only when the connection was refused
        self._probed: dict[int, int] = {}

    # ---- leadership ----------------------------------------------------------------------------

    def active(self) -> ControllerCore:
        """The core, if we may act as controller now; else NOT_CONTROLLER."""
        if not self.quorum.is_leader():
            self.core = None
            raise ControllerError("NOT_CONTROLLER", self._not_controller_message())
        if self.core is None:
            self.core = ControllerCore(self.config, self.clock_ms())
            log.info("node %s is the active controller", self.node_id)
        return self.core

    def _not_controller_message(self) -> str:
        leader = self.quorum.leader_id()
        return f"node {self.node_id} is not the controller (the quorum leader is {leader})"

    async def submit(self, command: Command) -> dict[str, Any]:
        """Commit one command; its result map (may carry "error") once applied here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()

        def done(result: bytes | None, error: Any) -> None:
            def resolve() -> None:
                if future.done():
                    return
                if error is not None or result is None:
                    code = "REQUEST_TIMED_OUT"
                    name = type(error).__name__
                    if name == "NotLeaderError":
                        code = "NOT_CONTROLLER"
                    future.set_exception(ControllerError(code, f"{name}: {error}"))
                else:
                    future.set_result(cbor2.loads(result))

            loop.call_soon_threadsafe(resolve)

        self.quorum.submit_async(encode_command(command), self.submit_timeout_s, done)
        return await future

    async def tick(self) -> None:
        """Submit what the core decides now (called every few tens of ms on every broker)."""
        if not self.quorum.is_leader():
            if self.core is not None:
                log.info("node %s is no longer the active controller", self.node_id)
            self.core = None
            return
        core = self.active()
        now = self.clock_ms()
        with self.store.read() as state:
            decisions = core.decisions(state, now)
            overdue = core.overdue(state, now)
            addresses = {b.broker_id: b.address for b in state.brokers.values()}
        for subject, command in decisions:
            self.decisions_submitted += 1
            asyncio.get_running_loop().create_task(self._decide(core, subject, command))
        for broker_id, incarnation in overdue:
            if now - self._probed.get(broker_id, -(10**9)) >= PROBE_INTERVAL_MS:
                self._probed[broker_id] = now
                asyncio.get_running_loop().create_task(
                    self._probe(core, broker_id, incarnation, addresses[broker_id])
                )

    async def _probe(
        self, core: ControllerCore, broker_id: int, incarnation: int, address: str
    ) -> None:
        """Is anything listening on the late broker's port? Refused means the process is gone."""
        if self.probe is None:
            return
        if await self.probe(address):
            return
        log.info("broker %s at %s refuses connections: fencing it now", broker_id, address)
        core.declare_dead(broker_id, incarnation)

    async def _decide(self, core: ControllerCore, subject: object, command: Command) -> None:
        try:
            result = await self.submit(command)
            if "error" in result:
                log.warning("decision %s refused: %s", command, result)
            else:
                log.info("decided %s", command)
        except ControllerError as exc:
            log.warning("decision %s not committed: %s", command, exc)
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
    ) -> int:
        self.active()
        result = await self.submit(RegisterBroker(broker_id, address, incarnation, rack, unclean))
        self._raise_for(result)
        return int(result["broker_epoch"])

    def heartbeat(
        self, broker_id: int, incarnation: int, metadata_version: int
    ) -> tuple[bool, bool]:
        """(known, fenced) — unknown means: register again."""
        core = self.active()
        with self.store.read() as state:
            verdict = core.heartbeat(
                state, broker_id, incarnation, metadata_version, self.clock_ms()
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

    async def alter_partition(self, command: AlterPartition) -> dict[str, Any]:
        self.active()
        return await self.submit(command)

    async def replicas_damaged(self, command: ReplicasDamaged) -> dict[str, Any]:
        self.active()
        if len(command.partitions) > REPORTED_PARTITIONS_MAX:
            raise ControllerError("INVALID_REQUEST", "too many partitions in one damage report")
        return await self.submit(command)

    async def allocate_producer_ids(self, broker_id: int, count: int) -> dict[str, Any]:
        self.active()
        result = await self.submit(AllocateProducerIds(broker_id, count))
        self._raise_for(result)
        return result

    # ---- admin -------------------------------------------------------------------------------

    async def create_topic(self, request: TopicRequest, *, validate_only: bool) -> dict[str, Any]:
        self.active()
        with self.store.read() as state:
            live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
            exists = request.name in state.topics
            counts = state.leader_counts()
        if exists:
            return {"error": "TOPIC_ALREADY_EXISTS", "message": f"{request.name!r} exists"}
        if request.partitions < 1:
            return {"error": "INVALID_PARTITIONS", "message": "partitions must be >= 1"}
        if request.replication_factor < 1:
            return {"error": "INVALID_REPLICATION_FACTOR", "message": "must be >= 1"}
        try:
            validate_configs(request.configs.items(), request.replication_factor)
            assignment = assign_replicas(
                live, request.partitions, request.replication_factor, leader_counts=counts
            )
        except ConfigError as exc:
            return {"error": "INVALID_CONFIG", "message": str(exc)}
        except AssignmentError as exc:
            return {"error": "INVALID_REPLICATION_FACTOR", "message": str(exc)}
        if validate_only:
            return {"ok": True, "topic_id": -1}
        command = CreateTopic(
            request.name, tuple(assignment), tuple(sorted(request.configs.items()))
        )
        return await self.submit(command)

    async def delete_topic(self, name: str) -> dict[str, Any]:
        self.active()
        return await self.submit(DeleteTopic(name))

    async def alter_configs(
        self, name: str, set_configs: Mapping[str, str], delete: list[str]
    ) -> dict[str, Any]:
        self.active()
        command = AlterTopicConfig(name, tuple(sorted(set_configs.items())), tuple(delete))
        return await self.submit(command)

    @staticmethod
    def _raise_for(result: dict[str, Any]) -> None:
        if "error" in result:
            raise ControllerError(str(result["error"]), str(result.get("message", "")))
