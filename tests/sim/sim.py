"""One seeded run of the whole cluster: boot, workload under faults, heal, settle, drain, check.

``run_seed(seed)`` is the entry point. Everything random is drawn from one ``random.Random(seed)``
(the cluster's shape, network delays, faults, client timing); time is the virtual clock of
``looptime``; the brokers write real files under a temporary directory (tmpfs when the machine
has one) that is removed afterwards. The same seed gives the same history, bit for bit, in the
same process or another one (``PYTHONHASHSEED`` fixed: see ``__main__``).

Phases (virtual time):
1. boot: the controller, ``brokers`` brokers; once all registered and unfenced, the topic is
   created (RF 3, min.insync.replicas 2).
2. for ``duration_ms``: producers and consumers run while the nemesis injects faults.
3. heal: every fault ends (crashed brokers restart, the network heals); producers stop making
   new values and finish (or time out) what they hold.
4. settle: until every partition has a leader, its full ISR and equal logs, or ``settle_ms_max``.
5. drain: each key is read whole through its leader (the consumer view, below the HW) and from
   every replica's log up to the leader's HW; then ``chaos.checker.check`` judges the history.

A run fails when the checker finds any bad anomaly, when simulated code raised, or when the
cluster did not settle after healing (a liveness failure: reported apart, with its state).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from raftlog.chaos.anomalies import CheckResult
from raftlog.chaos.checker import check
from raftlog.chaos.history import OpF, OpType, dump_jsonl, read_value
from raftlog.cluster.replica_rules import CONSUMER, FetchSpec
from raftlog.proto.codes import ErrorCode
from raftlog.raft.commands import CreateTopic
from raftlog.raft.controller import ControllerConfig
from raftlog.raft.metadata_records import NO_LEADER, TopicPartition
from raftlog.segments import StorageError

from .broker import BrokerConfig, SimBroker
from .controller import ControllerShell, Quorum, QuorumConfig
from .disk import DurabilityTracker
from .nemesis import FaultConfig, Nemesis
from .node import Process, World
from .workload import ClientConfig, History, SimConsumer, SimProducer, decode, key_name

__all__ = ["Cluster", "SimConfig", "SimResult", "run_seed"]

TOPIC = "t"
_READ_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SimConfig:
    duration_ms: int = 60_000
    brokers: tuple[int, ...] = (3, 3, 4, 5)  # drawn per seed
    partitions: tuple[int, ...] = (2, 3, 4)  # drawn per seed
    replication_factor: int = 3
    min_insync_replicas: int = 2
    producers: int = 3
    consumers: int = 2
    settle_ms_max: int = 60_000
    boot_ms_max: int = 20_000
    faults: FaultConfig = field(default_factory=FaultConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    quorum: QuorumConfig = field(default_factory=QuorumConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)


@dataclass(frozen=True, slots=True)
class SimResult:
    seed: int
    valid: bool  # the checker found nothing bad
    settled: bool  # the cluster converged after healing
    errors: tuple[str, ...]  # exceptions raised in simulated code
    bad: tuple[str, ...]  # the checker's bad anomaly kinds
    history_sha256: str
    simulated_ms: int
    wall_s: float
    summary: dict[str, Any]
    check: CheckResult | None = None
    unsettled: str = ""  # what did not converge
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.valid and self.settled and not self.errors

    def describe(self) -> str:
        lines = [
            f"SEED={self.seed} {'ok' if self.ok else 'FAILED'}: valid={self.valid} "
            f"settled={self.settled} errors={len(self.errors)} bad={list(self.bad)} "
            f"simulated {self.simulated_ms / 1000:.1f} s in {self.wall_s:.2f} s",
            f"  {self.summary}",
        ]
        if self.unsettled:
            lines.append(f"  not settled: {self.unsettled}")
        if self.check is not None:
            for kind in self.check.bad_kinds:
                anomaly = self.check[kind]
                lines.append(f"  {kind.value}: {anomaly.count} e.g. {list(anomaly.examples[:3])}")
        lines.extend(f"  error: {e}" for e in self.errors[:3])
        return "\n".join(lines)


def _scratch_root() -> str:
    """tmpfs when there is one: fsync is free there, and nothing touches a real disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


class Cluster:
    """The brokers, the quorum and controller, and the clients of one run."""

    def __init__(self, world: World, config: SimConfig, root: str, tracker: DurabilityTracker):
        self.world = world
        self.config = config
        self.root = root
        self.tracker = tracker
        rng = world.rng
        count = rng.choice(config.brokers)
        self.partition_count = rng.choice(config.partitions)
        self.broker_ids = list(range(1, count + 1))
        self.keys: list[TopicPartition] = [(TOPIC, p) for p in range(self.partition_count)]
        self.driver = Process(world, "driver")  # the harness itself: never faulted
        self.quorum = Quorum(world, config.quorum)
        self.controller: ControllerShell | None = None
        self.brokers: dict[int, SimBroker] = {}
        self.down: dict[int, bool] = {}  # broker → whether its last stop was a power loss
        # broker → the incarnation started after its power loss (None: not yet), until that
        # incarnation is registered, unfenced and back in every ISR it belongs to
        self.power_lost: dict[int, int | None] = {}
        self.producers: list[SimProducer] = []
        self.consumers: list[SimConsumer] = []
        self.history = History(world)
        network = world.network
        network.delay_ms_max = rng.choice([2, 5, 10, 30])
        self.base_network = (network.drop_p, network.delay_ms_min, network.delay_ms_max)
        for broker_id in self.broker_ids:
            machine = self._machine(broker_id)
            os.makedirs(machine)
            self._new_boot_id(broker_id)

    # ---- machines ------------------------------------------------------------------------------

    def _machine(self, broker_id: int) -> str:
        return os.path.join(self.root, f"b{broker_id}")

    def _new_boot_id(self, broker_id: int) -> None:
        boot = f"{self.world.seed}-{broker_id}-{self.world.now_ms()}-{self.world.rng.random()}"
        with open(os.path.join(self._machine(broker_id), "boot_id"), "w") as f:
            f.write(boot)

    def start(self, broker_id: int) -> None:
        if broker_id in self.brokers:
            return
        self.down.pop(broker_id, None)
        broker = self.brokers[broker_id] = SimBroker(
            self.world, broker_id, self._machine(broker_id), self.config.broker
        )
        if broker_id in self.power_lost:
            self.power_lost[broker_id] = broker.proc.incarnation
        if self.world.tracing:
            ends = {k: p.log.log_end_offset for k, p in sorted(broker.replicas.partitions.items())}
            self.world.trace(f"b{broker_id} starts (unclean {broker.unclean}); logs end {ends}")

    def crash(self, broker_id: int) -> None:
        broker = self.brokers.pop(broker_id)
        broker.crash()
        self.down[broker_id] = False

    def stop(self, broker_id: int) -> None:
        broker = self.brokers.pop(broker_id)
        broker.stop()
        self.down[broker_id] = False

    def power_loss(self, broker_id: int) -> None:
        broker = self.brokers.pop(broker_id)
        broker.crash()
        dropped = self.tracker.power_loss(
            os.path.join(self._machine(broker_id), "data"), self.world.rng
        )
        self.world.trace(f"b{broker_id} loses power: {dropped} unsynced bytes dropped")
        self._new_boot_id(broker_id)
        self.down[broker_id] = True
        self.power_lost[broker_id] = None

    def recovering_from_power_loss(self) -> bool:
        """Is a broker that lost power not yet safe again? Its new incarnation must be the
        registered one (its unclean registration took it out of every ISR), unfenced, and back
        in every ISR: until then another power loss could hit a majority of some partition."""
        state = self.quorum.state
        for broker_id, incarnation in sorted(self.power_lost.items()):
            record = state.brokers.get(broker_id)
            if (
                broker_id in self.down
                or incarnation is None
                or record is None
                or record.incarnation != incarnation
                or record.fenced
                or any(broker_id not in p.isr for p in state.replicas_of(broker_id))
            ):
                return True
            del self.power_lost[broker_id]
        return False

    def random_up_broker(self) -> int | None:
        up = sorted(self.brokers)
        return self.world.rng.choice(up) if up else None

    def random_leader(self) -> int | None:
        leaders = sorted(
            {r.leader for r in self.quorum.state.partitions.values() if r.leader != NO_LEADER}
        )
        return self.world.rng.choice(leaders) if leaders else None

    def client_nodes(self) -> list[str]:
        return [p.proc.node for p in self.producers] + [c.proc.node for c in self.consumers]

    def controller_up(self) -> None:
        if self.controller is None:
            self.controller = ControllerShell(self.world, self.quorum, self.config.controller)

    def controller_down(self) -> None:
        if self.controller is not None:
            self.controller.proc.kill()
            self.controller = None

    # ---- phases ----------------------------------------------------------------------------------

    async def boot(self) -> bool:
        self.controller_up()
        for broker_id in self.broker_ids:
            self.start(broker_id)
        deadline = self.world.now_ms() + self.config.boot_ms_max
        state = self.quorum.state
        while self.world.now_ms() < deadline:
            await self.driver.sleep(50)
            if len(state.brokers) == len(self.broker_ids) and all(
                not b.fenced for b in state.brokers.values()
            ):
                break
        else:
            return False
        n = len(self.broker_ids)
        rf = min(self.config.replication_factor, n)
        assignment = tuple(
            tuple(self.broker_ids[(p + i) % n] for i in range(rf))
            for p in range(self.partition_count)
        )
        configs = (("min.insync.replicas", str(self.config.min_insync_replicas)),)
        created = self.driver.future()
        self.quorum.submit(
            CreateTopic(TOPIC, assignment, configs), lambda r: self.driver.resolve(created, r)
        )
        result = await created
        return isinstance(result, dict) and "error" not in result

    def start_clients(self) -> None:
        world = self.world
        config = self.config.client
        for i in range(self.config.producers):
            producer = SimProducer(world, self.history, i, self.keys, self.broker_ids, config)
            self.producers.append(producer)
            producer.start()
        for i in range(self.config.consumers):
            process_id = self.config.producers + i
            keys = [k for j, k in enumerate(self.keys) if j % self.config.consumers == i]
            if not keys:
                continue
            consumer = SimConsumer(world, self.history, process_id, keys, self.broker_ids, config)
            self.consumers.append(consumer)
            consumer.start()

    def heal(self, nemesis: Nemesis) -> None:
        nemesis.heal_all()
        network = self.world.network
        network.heal_all()
        network.drop_p, network.delay_ms_min, network.delay_ms_max = self.base_network
        self.controller_up()
        for broker_id in self.broker_ids:
            self.start(broker_id)
            self.brokers[broker_id].proc.resume()
        for producer in self.producers:
            producer.producing = False

    def unsettled(self) -> str:
        """'' when every partition has a leader, its full ISR, equal logs and a HW at the end,
        and no producer holds anything; else what is not there yet."""
        if self.controller is None:
            return "no controller"
        for producer in self.producers:
            if producer.pending():
                return f"producer {producer.process_id} holds {producer.pending()} batches"
        state = self.quorum.state
        for key in self.keys:
            record = state.partitions[key]
            if record.leader == NO_LEADER:
                return f"{key_name(key)} has no leader ({record})"
            if record.isr != record.replicas:
                return f"{key_name(key)} ISR {record.isr} of {record.replicas}"
            leader = self.brokers[record.leader].replicas.partitions.get(key)
            if leader is None or leader.leader is None:
                return f"{key_name(key)}: broker {record.leader} does not lead it yet"
            end = leader.log.log_end_offset
            if leader.high_watermark != end:
                return f"{key_name(key)}: HW {leader.high_watermark} below the end {end}"
            for broker_id in record.replicas:
                replica = self.brokers[broker_id].replicas.partitions.get(key)
                if replica is None or replica.log.log_end_offset != end:
                    return f"{key_name(key)}: broker {broker_id} is not at {end}"
        return ""

    async def settle(self) -> str:
        deadline = self.world.now_ms() + self.config.settle_ms_max
        why = self.unsettled()
        while why and self.world.now_ms() < deadline:
            await self.driver.sleep(100)
            why = self.unsettled()
        for consumer in self.consumers:
            consumer.polling = False
        return why

    def drain(self) -> None:
        """Read every key whole: through its leader (below the HW), and each replica's log."""
        state = self.quorum.state
        history = self.history
        drainer = self.config.producers + self.config.consumers
        for key in self.keys:
            record = state.partitions[key]
            broker = self.brokers.get(record.leader) if record.leader != NO_LEADER else None
            leader = broker.replicas.partitions.get(key) if broker is not None else None
            if broker is None or leader is None or leader.leader is None:
                continue
            name = key_name(key)
            start = leader.log.log_start_offset
            op = history.invoke(drainer, OpF.DRAIN, {})
            records = []
            offset = start
            while offset < leader.high_watermark:
                spec = FetchSpec(key[0], key[1], offset, -1, -1, _READ_BYTES)
                outcome = broker.replicas.read_one(
                    spec, CONSUMER, _READ_BYTES, record_progress=False
                )
                got = decode(outcome.records, offset) if outcome.error == ErrorCode.NONE else []
                if not got:
                    break
                records.extend(got)
                offset = got[-1][0] + 1
            history.complete(op, OpType.OK, read_value({name: records}, {name: start}))
            hw = leader.high_watermark
            for broker_id in record.replicas:
                replica = self.brokers[broker_id].replicas.partitions.get(key)
                if replica is None:
                    continue
                log_ = replica.log
                node_op = history.invoke(drainer, OpF.DRAIN, {}, node=broker_id)
                node_records = []
                offset = log_.log_start_offset
                try:
                    while offset < min(hw, log_.log_end_offset):
                        got = decode(log_.read(offset, _READ_BYTES, max_offset=hw).data, offset)
                        if not got:
                            break
                        node_records.extend(got)
                        offset = got[-1][0] + 1
                except StorageError as exc:
                    history.complete(node_op, OpType.FAIL, error=str(exc))
                    continue
                history.complete(
                    node_op,
                    OpType.OK,
                    read_value({name: node_records}, {name: log_.log_start_offset}),
                )


@contextlib.contextmanager
def _scratch(seed: int) -> Iterator[str]:
    root = tempfile.mkdtemp(prefix=f"raftlog-sim-{seed}-", dir=_scratch_root())
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def history_sha256(history: History) -> str:
    out = io.StringIO()
    dump_jsonl(history.builder.ops, out)
    return hashlib.sha256(out.getvalue().encode()).hexdigest()


def run_seed(seed: int, config: SimConfig | None = None, *, trace: bool = False) -> SimResult:
    """Simulate one seed; see the module docstring. ``trace`` keeps a log of what happened
    (faults, commits, roles, truncations) in ``SimResult.trace``."""
    config = config or SimConfig()
    started = time.perf_counter()
    world = World(seed)
    world.tracing = trace
    with _scratch(seed) as root, DurabilityTracker() as tracker:
        cluster = Cluster(world, config, root, tracker)
        nemesis = Nemesis(cluster, config.faults)
        outcome: dict[str, Any] = {}

        async def main() -> None:
            if not await cluster.boot():
                outcome["unsettled"] = "the cluster did not boot"
                return
            cluster.start_clients()
            await nemesis.run(world.now_ms() + config.duration_ms)
            cluster.heal(nemesis)
            outcome["unsettled"] = await cluster.settle()
            cluster.drain()

        try:
            world.loop.run_until_complete(main())
        finally:
            for broker in list(cluster.brokers.values()):
                broker.crash()
            simulated_ms = world.now_ms()
            world.close()
    result = check(cluster.history.builder.ops)
    summary = {
        "brokers": len(cluster.broker_ids),
        "partitions": cluster.partition_count,
        "sends_ok": result.summary.sends_ok,
        "sends_info": result.summary.sends_info,
        "polls_ok": result.summary.polls_ok,
        "faults": dict(sorted(nemesis.counts.items())),
        "commands": len(cluster.quorum.log),
        "messages": world.network.sent,
    }
    unsettled = str(outcome.get("unsettled", "the run ended early"))
    return SimResult(
        seed=seed,
        valid=result.valid,
        settled=not unsettled,
        errors=tuple(world.errors),
        bad=tuple(k.value for k in result.bad_kinds),
        history_sha256=history_sha256(cluster.history),
        simulated_ms=simulated_ms,
        wall_s=time.perf_counter() - started,
        summary=summary,
        check=result,
        unsettled=unsettled,
        trace=tuple(world.traced),
    )
