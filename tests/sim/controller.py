"""The metadata quorum and the active controller, as the simulation runs them.

``Quorum`` stands in for the Raft group: a sequencer. Commands submitted to it commit in
submission order after a seeded latency and are applied to one ``MetadataState`` (the real state
machine, ``raft/metadata.py``); the committed log is kept, and each broker applies it through
its own replica of the state at its own pace (``SimBroker`` pulls it over the network: per-broker
apply lag, and a broker cut off from the controller applies nothing). The log is durable and
never diverges: Raft's own faults are out of scope here (pysyncobj has its own tests).

``ControllerShell`` is ``cluster/controller_service.py``'s ``ActiveController`` reduced to what
the data plane uses, over the simulated network, around the real ``ControllerCore``: broker
registration and heartbeats, the core's decisions every ``TICK_MS`` (fence, unfence, elect),
probes of late brokers (a down broker's port refuses: fenced at once), AlterPartition,
damage reports, producer-id blocks, and the committed log for brokers to apply. A failover ends
the shell's process: for an unavailable window nobody answers (callers are refused), then a new
term starts with a fresh core, as the real controller does on a new Raft leader. Commands in
flight at the failover commit or are lost (seeded): a lost AlterPartition is only seen by its
sender's timeout, as in the real system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftlog.raft.commands import (
    AllocateProducerIds,
    AlterPartition,
    Command,
    CreateTopic,
    RegisterBroker,
    ReplicasDamaged,
    decode_command,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig, ControllerCore, Steps
from raftlog.raft.metadata import MetadataState

from .node import Process, RpcError, RpcRefused, World

__all__ = ["CONTROLLER", "ControllerShell", "Quorum", "QuorumConfig"]

CONTROLLER = "ctl"  # the controller's node name on the network
TICK_MS = 20
PROBE_INTERVAL_MS = 300
PROBE_TIMEOUT_MS = 500
LOG_CHUNK_MAX = 200  # commands in one answer to a broker's pull


@dataclass(frozen=True, slots=True)
class QuorumConfig:
    commit_ms_min: int = 1
    commit_ms_max: int = 15
    lost_on_failover_p: float = 0.5  # a command in flight when the controller fails over


class Quorum:
    """See the module docstring. ``state.version == len(log)`` at all times."""

    def __init__(self, world: World, config: QuorumConfig) -> None:
        self.world = world
        self.config = config
        self.state = MetadataState()
        self.log: list[bytes] = []
        self.term = 0
        self._last_commit_ms = 0
        self.lost = 0
        # called after each commit with the command and its result (the nemesis reacts)
        self.observers: list[Callable[[Command, dict[str, Any]], None]] = []

    def submit(self, command: Command, done: Callable[[dict[str, Any] | None], None]) -> None:
        """Commit ``command`` after the latency; ``done`` gets its result (or None if lost)."""
        world = self.world
        latency = world.rng.randint(self.config.commit_ms_min, self.config.commit_ms_max)
        when = max(self._last_commit_ms, world.now_ms() + latency)
        self._last_commit_ms = when
        world.at(when, self._commit, encode_command(command), done, self.term)

    def _commit(
        self, data: bytes, done: Callable[[dict[str, Any] | None], None], term: int
    ) -> None:
        if term != self.term and self.world.rng.random() < self.config.lost_on_failover_p:
            self.lost += 1
            done(None)
            return
        applied = self.state.apply(data)
        self.log.append(data)
        if self.world.tracing:
            self._trace(data, applied.result)
        if self.observers:
            command = decode_command(data)
            for observer in self.observers:
                observer(command, applied.result)
        done(applied.result)

    def _trace(self, data: bytes, result: dict[str, Any]) -> None:
        command = decode_command(data)
        self.world.trace(f"commit v{self.state.version} {command} -> {result}")
        if isinstance(command, CreateTopic | RegisterBroker):
            return
        for record in sorted(self.state.partitions.values(), key=lambda r: r.key):
            self.world.trace(
                f"    {record.topic}-{record.partition} leader {record.leader} "
                f"epoch {record.leader_epoch}/{record.partition_epoch} isr {record.isr} "
                f"elr {record.elr} last_known {record.last_known_elr}"
            )


class ControllerShell:
    """One term of the active controller; see the module docstring."""

    def __init__(self, world: World, quorum: Quorum, config: ControllerConfig) -> None:
        self.world = world
        self.quorum = quorum
        quorum.term += 1
        self.proc = Process(world, CONTROLLER)
        self.core = ControllerCore(config, world.clock.mono_ms())
        self._probed: dict[int, int] = {}
        self.decisions = 0
        self.proc.handlers.update(
            register=self._register,
            heartbeat=self._heartbeat,
            alter_partition=self._alter_partition,
            replicas_damaged=self._replicas_damaged,
            allocate_producer_ids=self._allocate_producer_ids,
            pull=self._pull,
        )
        self.proc.every(TICK_MS, self._tick)

    async def submit(self, command: Command) -> dict[str, Any]:
        """The command's result once committed; a lost one never answers (the caller's RPC
        times out), as a proposal lost with its Raft leader."""
        answer = self.proc.future()
        self.quorum.submit(command, lambda result: self.proc.resolve(answer, result))
        result = await answer
        if result is None:
            await self.proc.future()  # lost: wait forever (the process dies with its term)
        assert isinstance(result, dict)
        return result

    # ---- the core's decisions ------------------------------------------------------------------

    def _tick(self) -> None:
        core = self.core
        now = self.world.clock.mono_ms()
        state = self.quorum.state
        for subject, command in core.decisions(state, now):
            self.decisions += 1
            self.proc.spawn(self._decide(subject, command))
        for broker_id, incarnation in core.overdue(state, now):
            if now - self._probed.get(broker_id, -(10**9)) >= PROBE_INTERVAL_MS:
                self._probed[broker_id] = now
                self.proc.spawn(self._probe(broker_id, incarnation))

    async def _decide(self, subject: object, decided: Command | Steps) -> None:
        commands = decided.commands if isinstance(decided, Steps) else (decided,)
        try:
            for command in commands:  # one after another, as the real shell does
                if "error" in await self.submit(command):
                    return
        finally:
            self.core.completed(subject)

    async def _probe(self, broker_id: int, incarnation: int) -> None:
        try:
            await self.world.rpc.call(
                self.proc, broker_node(broker_id), "probe", None, PROBE_TIMEOUT_MS
            )
        except RpcRefused:
            self.core.declare_dead(broker_id, incarnation)
        except RpcError:
            pass  # a timeout: maybe alive (only the session timeout may fence it)

    # ---- requests ------------------------------------------------------------------------------

    async def _register(self, request: RegisterBroker) -> dict[str, Any]:
        return await self.submit(request)

    async def _heartbeat(self, request: tuple[int, int, int, list[int]]) -> tuple[bool, bool]:
        broker_id, incarnation, metadata_version, reachable = request
        verdict = self.core.heartbeat(
            self.quorum.state,
            broker_id,
            incarnation,
            metadata_version,
            self.world.clock.mono_ms(),
            reachable,
        )
        return verdict.known, verdict.fenced

    async def _alter_partition(self, request: AlterPartition) -> dict[str, Any]:
        return await self.submit(request)

    async def _replicas_damaged(self, request: ReplicasDamaged) -> dict[str, Any]:
        return await self.submit(request)

    async def _allocate_producer_ids(self, request: AllocateProducerIds) -> dict[str, Any]:
        return await self.submit(request)

    async def _pull(self, from_version: int) -> tuple[list[bytes], int]:
        log = self.quorum.log
        return log[from_version : from_version + LOG_CHUNK_MAX], len(log)


def broker_node(broker_id: int) -> str:
    return f"b{broker_id}"
