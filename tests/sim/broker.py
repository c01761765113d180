"""One simulated broker process: the real ``ReplicaManager`` over real logs, wired like
``cluster/broker.py`` wires it, with the network and the quorum simulated.

What is real: ``ReplicaManager`` (produce, fetch, purgatories, ISR and HW rules, truncation,
producer-state dedupe, damage handling, checkpoints), the ``segments`` logs in a temporary
directory (recovery at open), the ``BrokerStateStore`` (LMDB), ``cluster.restart`` (clean /
crash / power-loss verdict from a per-machine boot id), the ``PartitionListener`` and a replica
of ``MetadataState`` applying the committed log. What is simulated: the gRPC servicers (each
RPC handler here restates what ``cluster/data_rpcs.py`` and ``metadata_rpcs.py`` do before
calling the replica manager), the Raft member (the broker pulls the committed log from the
controller: its apply lag), the fetchers (``follower.py``) and the clocks (``SimClock``).

``make_replica_manager`` is the one place that builds a ``ReplicaManager``: its signature is in
flux (typed time), so this adapts to either form.

Owned by the simulation's one thread; each instance is one incarnation (a restart builds a new
one over the same data directory).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from raftlog.cluster import restart
from raftlog.cluster.fetcher import FetcherConfig
from raftlog.cluster.partition import Partition
from raftlog.cluster.replica_manager import ReplicaManager, ReplicaManagerConfig
from raftlog.cluster.replica_rules import CONSUMER, FetchOutcome, FetchSpec, ProduceOutcome
from raftlog.cluster.replication import IsrProposal, alter_partition_outcome
from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import (
    AllocateProducerIds,
    AlterPartition,
    RegisterBroker,
    ReplicasDamaged,
)
from raftlog.raft.listener import PartitionListener
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import TopicRecord
from raftlog.segments import BrokerStateStore

from .controller import CONTROLLER, broker_node
from .disk import close_fds_under
from .follower import FetcherPlan
from .node import Process, RpcError, SimClock, World

__all__ = ["BrokerConfig", "SimBroker", "make_replica_manager"]

PRODUCER_ID_BLOCK = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerConfig:
    heartbeat_interval_ms: int = 200
    replica_lag_ms_max: int = 10_000
    replica_silence_ms_max: int = 2000
    segment_bytes: int = 16 << 10
    hw_checkpoint_interval_ms: int = 2000
    retention_check_interval_ms: int = 30_000
    request_timeout_ms_max: int = 30_000
    metadata_pull_ms_min: int = 5  # per-broker apply lag: the pause between two pulls
    metadata_pull_ms_max: int = 150
    background_fsync_ms_max: int = 30  # a rolled segment's fsync completes this much later
    rpc_timeout_ms: int = 5000
    scrub_interval_ms: int = 10_000


def make_replica_manager(
    config: ReplicaManagerConfig,
    state: BrokerStateStore,
    clock: SimClock,
    *,
    topic_lookup: Callable[[str], TopicRecord | None],
    propose_isr: Callable[[Partition, IsrProposal], None],
    follower_changed: Callable[[Partition], None],
    broker_eligible: Callable[[int], bool],
    background: Callable[[Callable[[], None]], None] | None,
) -> ReplicaManager:
    """The simulation's only construction of a ``ReplicaManager``."""
    fields = {f.name for f in dataclasses.fields(ReplicaManager)}
    time_args: dict[str, Any]
    if "clock" in fields:  # typed time: one Clock for both domains
        time_args = {"clock": clock}
    else:  # before it: two callables
        time_args = {"clock_ms": clock.mono_ms, "wall_clock_ms": clock.wall_ms}
    return ReplicaManager(
        config=config,
        state=state,
        topic_lookup=topic_lookup,
        propose_isr=propose_isr,
        follower_changed=follower_changed,
        broker_eligible=broker_eligible,
        background=background,
        **time_args,
    )


class SimBroker:
    """One incarnation of broker ``broker_id``; see the module docstring."""

    def __init__(
        self, world: World, broker_id: int, machine_dir: str, config: BrokerConfig
    ) -> None:
        self.world = world
        self.broker_id = broker_id
        self.config = config
        self.fetcher_config = FetcherConfig(rpc_timeout_ms=config.rpc_timeout_ms)
        self.data_dir = os.path.join(machine_dir, "data")
        self.boot_id_path = os.path.join(machine_dir, "boot_id")
        self.proc = Process(world, broker_node(broker_id))
        self.clock = world.clock
        self.meta = MetadataState()
        self.listener = PartitionListener(broker_id)
        self.state = BrokerStateStore(os.path.join(self.data_dir, "state"), map_size_bytes=64 << 20)
        self.unclean = restart.begin(self.state, self.boot_id_path)
        self.registered = False
        self.fenced = True
        self._pulling = False
        self._pull_again = False
        self._pid_next = self._pid_end = 0
        self.plan = FetcherPlan(self)
        self.replicas = make_replica_manager(
            ReplicaManagerConfig(
                broker_id=broker_id,
                data_dir=os.path.join(self.data_dir, "logs"),
                replica_lag_ms_max=config.replica_lag_ms_max,
                replica_silence_ms_max=config.replica_silence_ms_max,
                segment_bytes=config.segment_bytes,
            ),
            self.state,
            self.clock,
            topic_lookup=self.meta.topics.get,
            propose_isr=self._propose_isr,
            follower_changed=self.plan.partition_changed,
            broker_eligible=self.meta.is_live,
            background=self._in_background,
        )
        proc = self.proc
        proc.handlers.update(
            produce=self._produce,
            fetch=self._fetch,
            metadata=self._metadata,
            init_producer_id=self._init_producer_id,
            probe=self._probe,
        )
        proc.spawn(self._lifecycle())
        proc.spawn(self._pull_loop())
        replicas = self.replicas
        proc.every(100, replicas.periodic)
        proc.every(10, replicas.expire)
        proc.every(config.hw_checkpoint_interval_ms, replicas.checkpoint)
        proc.every(config.retention_check_interval_ms, replicas.enforce_retention)
        proc.every(60_000, replicas.expire_producers)
        proc.every(200, self._report_damage)
        # the broker scrubs every second (4 MiB a call); the simulation corrupts nothing, so a
        # scrub now and then keeps the code path without rereading every log every second
        proc.every(config.scrub_interval_ms, replicas.scrub)

    # ---- wiring ----------------------------------------------------------------------------------

    def broker_address(self, broker_id: int) -> str | None:
        return broker_node(broker_id) if broker_id in self.meta.brokers else None

    def _in_background(self, work: Callable[[], None]) -> None:
        """A rolled segment's fsync, done later by the "disk thread" — unless the process dies
        first (then it never happened, and the recovery point says so)."""
        delay = self.world.rng.randint(0, self.config.background_fsync_ms_max)
        self.proc.call_later(delay, work)

    def _propose_isr(self, partition: Partition, proposal: IsrProposal) -> None:
        self.proc.spawn(self._send_alter_partition(partition, proposal))

    async def _send_alter_partition(self, partition: Partition, proposal: IsrProposal) -> None:
        key = partition.key
        accepted: bool | None = None  # no answer: it may have been committed (sent again)
        command = AlterPartition(
            key[0],
            key[1],
            self.broker_id,
            proposal.leader_epoch,
            proposal.partition_epoch,
            proposal.isr,
            proposal.incarnations,
        )
        try:
            result = await self.world.rpc.call(
                self.proc, CONTROLLER, "alter_partition", command, self.config.rpc_timeout_ms
            )
            accepted = alter_partition_outcome(result.get("error"))
            if accepted:
                self.replicas.isr_committed(
                    key, proposal.leader_epoch, result["isr"], result["partition_epoch"]
                )
                self._request_pull()
        except RpcError:
            pass
        finally:
            self.replicas.proposal_done(key, proposal, accepted)

    # ---- metadata --------------------------------------------------------------------------------

    def _request_pull(self) -> None:
        self._pull_again = True

    async def _pull_loop(self) -> None:
        """The Raft member's apply: pull the committed log from the controller, apply it to our
        replica of the state, and act on what changed (``broker._apply_metadata``)."""
        config = self.config
        rng = self.world.rng
        while True:
            if not self._pull_again:
                await self.proc.sleep(
                    rng.randint(config.metadata_pull_ms_min, config.metadata_pull_ms_max)
                )
            self._pull_again = False
            try:
                commands, commit_index = await self.world.rpc.call(
                    self.proc, CONTROLLER, "pull", self.meta.version, config.rpc_timeout_ms
                )
            except RpcError:
                continue
            for data in commands:
                self.meta.apply(data)
            if self.meta.version >= commit_index and not self.replicas.ready:
                self.replicas.ready = True
            if commands or self.replicas.ready:
                self._apply_metadata()
            if self.meta.version < commit_index:
                self._pull_again = True

    def _apply_metadata(self) -> None:
        if not self.replicas.ready:
            return
        me = self.meta.brokers.get(self.broker_id)
        if me is None or me.incarnation != self.proc.incarnation:
            return  # not registered yet: the roles there are a previous process's
        events = self.listener.changed(list(self.meta.partitions.values()))
        if events:
            if self.world.tracing:
                for event in events:
                    partition = self.replicas.partitions.get(event.key)
                    leo = partition.log.log_end_offset if partition is not None else None
                    self.world.trace(
                        f"b{self.broker_id} {event.kind.value} {event.key} epoch "
                        f"{event.record.leader_epoch if event.record else None} leo {leo}"
                    )
            self.replicas.apply_events(events)

    # ---- the controller link -----------------------------------------------------------------

    async def _lifecycle(self) -> None:
        interval = self.config.heartbeat_interval_ms
        rpc = self.world.rpc
        while True:
            try:
                if not self.registered:
                    result = await rpc.call(
                        self.proc,
                        CONTROLLER,
                        "register",
                        RegisterBroker(
                            self.broker_id,
                            broker_node(self.broker_id),
                            self.proc.incarnation,
                            None,
                            self.unclean,
                        ),
                        self.config.rpc_timeout_ms,
                    )
                    if "error" not in result:
                        self.registered = True
                        if self.unclean:
                            restart.reported(self.state)
                            self.unclean = False
                if self.registered:
                    known, fenced = await rpc.call(
                        self.proc,
                        CONTROLLER,
                        "heartbeat",
                        (
                            self.broker_id,
                            self.proc.incarnation,
                            self.meta.version,
                            self._reachable_peers(),
                        ),
                        max(4 * interval, 1000),
                    )
                    if not known:
                        self.registered = False
                        continue
                    self.fenced = fenced
            except RpcError:
                pass
            await self.proc.sleep(interval)

    def _reachable_peers(self) -> list[int]:
        """What cluster/peers.py's pings would find, from the simulated network: the brokers
        running, not paused and linked to us both ways."""
        me = broker_node(self.broker_id)
        network = self.world.network
        out = []
        for peer in sorted(self.meta.brokers):
            node = broker_node(peer)
            proc = self.world.process(node)
            if (
                peer != self.broker_id
                and proc is not None
                and proc.alive
                and not proc.paused
                and network.reachable(me, node)
                and network.reachable(node, me)
            ):
                out.append(peer)
        return out

    async def _report_damage(self) -> None:
        keys = sorted(self.replicas.damaged)
        if not keys or not self.registered:
            return
        command = ReplicasDamaged(self.broker_id, self.proc.incarnation, tuple(keys))
        try:
            result = await self.world.rpc.call(
                self.proc, CONTROLLER, "replicas_damaged", command, self.config.rpc_timeout_ms
            )
        except RpcError:
            return
        if "error" not in result:
            self.replicas.damage_reported(keys)
            self._request_pull()

    # ---- RPC handlers (what data_rpcs.py and metadata_rpcs.py do around the replica manager) -

    async def _produce(self, request: tuple[int, int, list[tuple[str, int, bytes]]]) -> Any:
        acks, timeout_ms, items = request
        timeout_ms = min(max(timeout_ms, 0), self.config.request_timeout_ms_max)
        outcomes: list[ProduceOutcome] = await self.replicas.produce(acks, timeout_ms, items)
        return outcomes

    async def _fetch(
        self, request: tuple[int, int, list[FetchSpec], FetcherConfig]
    ) -> tuple[str, list[FetchOutcome]]:
        replica_id, incarnation, specs, wire = request
        if replica_id != CONSUMER:
            record = self.meta.brokers.get(replica_id)
            if record is not None and incarnation < record.incarnation:
                return ErrorCode.STALE_BROKER_EPOCH, []
        outcomes = await self.replicas.fetch(
            replica_id,
            specs,
            max_wait_ms=wire.max_wait_ms,
            min_bytes=wire.min_bytes,
            max_bytes=wire.fetch_bytes_max,
            replica_incarnation=incarnation if replica_id != CONSUMER else -1,
        )
        return ErrorCode.NONE, outcomes

    async def _metadata(self, _request: None) -> dict[tuple[str, int], tuple[int, int]]:
        """A client's view: partition → (leader, leader epoch), from our applied metadata."""
        return {key: (r.leader, r.leader_epoch) for key, r in sorted(self.meta.partitions.items())}

    async def _probe(self, _request: None) -> bool:
        return True

    async def _init_producer_id(self, request: tuple[int, int]) -> tuple[str, int, int]:
        """(error, producer id, epoch): a bump of a known id, else an id from our block."""
        producer_id, epoch = request
        if producer_id >= 0 and 0 <= epoch < 32767:
            return ErrorCode.NONE, producer_id, epoch + 1
        if self._pid_next >= self._pid_end:
            try:
                result = await self.world.rpc.call(
                    self.proc,
                    CONTROLLER,
                    "allocate_producer_ids",
                    AllocateProducerIds(self.broker_id, PRODUCER_ID_BLOCK),
                    self.config.rpc_timeout_ms,
                )
            except RpcError:
                return ErrorCode.NOT_CONTROLLER, -1, -1
            if "error" in result:
                return result["error"], -1, -1
            self._pid_next, self._pid_end = result["start"], result["start"] + result["count"]
        self._pid_next += 1
        return ErrorCode.NONE, self._pid_next - 1, 0

    # ---- ends ------------------------------------------------------------------------------------

    def crash(self) -> None:
        """kill -9: the process and its memory go; the files stay as written (page cache)."""
        self.proc.kill()
        self.state.close()
        close_fds_under(self.data_dir)

    def stop(self) -> None:
        """SIGTERM: answer the waiters, flush and close every log, record the clean stop."""
        self.replicas.ready = False
        self.replicas.release_waiters()
        self.proc.kill()
        self.replicas.close()
        restart.closed_cleanly(self.state)
        self.state.close()
        close_fds_under(self.data_dir)
