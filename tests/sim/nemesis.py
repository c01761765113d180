"""The faults: a seeded schedule of partitions, crashes, pauses, power losses, clean restarts,
controller failovers and a degraded network, each with its own end; ``heal_all`` ends every one.

Jepsen's nemeses, in virtual time: a new fault every ``interval_ms_min..max``, at most
``active_max`` at once, each lasting ``duration_ms_min..max``. The cluster's side of each fault
is ``Cluster``'s (crash, restart, power loss, failover); this module only decides *what* and
*when* from the world's one random generator.

Fault model held (DESIGN.md): any number of crashes and pauses, partitions of any shape, and
power loss of a minority of each partition's replicas — so a power loss is only chosen while no
other broker is still recovering from one (back in every ISR it belongs to), which for RF 3 is
the minority of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftlog.raft.commands import AlterPartition, Command, ElectLeader, FenceBroker

from .controller import CONTROLLER, broker_node

if TYPE_CHECKING:
    from .sim import Cluster

__all__ = ["FaultConfig", "Nemesis"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    interval_ms_min: int = 200
    interval_ms_max: int = 3000
    duration_ms_min: int = 200
    duration_ms_max: int = 8000
    active_max: int = 4
    # relative weights of each fault
    partition: int = 6
    crash: int = 3
    pause: int = 3
    power: int = 2
    restart: int = 1
    failover: int = 2
    network: int = 2
    churn: int = 2  # isolate whichever broker leads, again and again (elections in a row)
    clients_cut_p: float = 0.3  # a partition also cuts clients from the isolated side
    # faults at interesting moments: right after an ISR change or an election commits, cut its
    # leader (with some of the other brokers) off from the controller and the rest — in the
    # spirit of FoundationDB's BUGGIFY: strike where a protocol is mid-step, not only at random
    react_isr_p: float = 0.3
    react_election_p: float = 0.3
    react_isr_delay_ms_max: int = 30  # before the leader hears of its ISR change
    react_election_delay_ms_max: int = 300  # after followers met the new leader's log
    # right after a follower truncated, before it fetched again, cut off the leader it follows
    # (never the follower with it: it is the one that must stay electable, KIP-101's scenario)
    react_truncation_p: float = 0.8
    react_truncation_delay_ms_max: int = 5


@dataclass(slots=True)
class _Fault:
    name: str
    end: Callable[[], None]


class Nemesis:
    """See the module docstring."""

    def __init__(self, cluster: Cluster, config: FaultConfig) -> None:
        self.cluster = cluster
        self.config = config
        self.world = cluster.world
        self.active: dict[int, _Fault] = {}  # fault id → its end; insertion-ordered
        self._ids = 0
        self.counts: dict[str, int] = {}
        self.running = False
        cluster.quorum.observers.append(self._on_commit)
        cluster.world.listeners.append(self._on_event)

    async def run(self, until_ms: int) -> None:
        rng = self.world.rng
        proc = self.cluster.driver
        config = self.config
        choices = [
            (self._partition, config.partition),
            (self._crash, config.crash),
            (self._pause, config.pause),
            (self._power, config.power),
            (self._restart, config.restart),
            (self._failover, config.failover),
            (self._network, config.network),
            (self._churn, config.churn),
        ]
        weights = [w for _, w in choices]
        self.running = True
        while self.world.now_ms() < until_ms:
            await proc.sleep(rng.randint(config.interval_ms_min, config.interval_ms_max))
            if not self.running or self.world.now_ms() >= until_ms:
                break
            if len(self.active) >= config.active_max:
                continue
            start = rng.choices([c for c, _ in choices], weights)[0]
            start()
        self.running = False

    def heal_all(self) -> None:
        self.running = False
        for fault in list(self.active.values()):
            fault.end()
        self.active.clear()

    # ---- bookkeeping -----------------------------------------------------------------------------

    def _begin(
        self,
        name: str,
        end: Callable[[], None],
        duration_ms: int | None = None,
        detail: object = "",
    ) -> None:
        self._ids += 1
        fault_id = self._ids
        self.counts[name] = self.counts.get(name, 0) + 1

        def finish() -> None:
            if self.active.pop(fault_id, None) is not None:
                self.world.trace(f"fault {fault_id} {name} ends")
                end()

        self.active[fault_id] = _Fault(name, end)
        if duration_ms is None:
            duration_ms = self.world.rng.randint(
                self.config.duration_ms_min, self.config.duration_ms_max
            )
        self.world.trace(f"fault {fault_id} {name} for {duration_ms} ms: {detail}")
        self.world.later(duration_ms, finish)

    # ---- reactions -------------------------------------------------------------------------------

    def _on_commit(self, command: Command, result: dict[str, Any]) -> None:
        if not self.running or "error" in result or len(self.active) >= self.config.active_max:
            return
        rng = self.world.rng
        config = self.config
        leader: int | None = None
        delay_ms_max = 0
        if isinstance(command, AlterPartition) and rng.random() < config.react_isr_p:
            leader, delay_ms_max = command.broker_id, config.react_isr_delay_ms_max
        elif (
            isinstance(command, FenceBroker | ElectLeader)
            and rng.random() < config.react_election_p
        ):
            leader = self.cluster.random_leader()
            delay_ms_max = config.react_election_delay_ms_max
        if leader is not None:
            self.world.later(rng.randint(0, delay_ms_max), self._cut_off, leader)

    def _on_event(self, event: str, details: dict[str, int]) -> None:
        if event != "truncated" or not self.running or len(self.active) >= self.config.active_max:
            return
        rng = self.world.rng
        if rng.random() < self.config.react_truncation_p:
            delay = rng.randint(0, self.config.react_truncation_delay_ms_max)
            self.world.later(delay, self._cut_off, details["leader"], details["broker"])

    def _cut_off(self, leader: int, spared: int | None = None) -> None:
        """Cut ``leader`` and a random few of the other brokers (never ``spared``) off from the
        rest and the controller."""
        if not self.running or len(self.active) >= self.config.active_max:
            return
        rng = self.world.rng
        others = [broker_node(b) for b in self.cluster.broker_ids if b not in (leader, spared)]
        rng.shuffle(others)
        side = [broker_node(leader), *others[: rng.randint(0, len(others) // 2)]]
        if spared is not None:
            others.append(broker_node(spared))
        rest = [n for n in [*others, CONTROLLER] if n not in side]
        links = [(a, b) for a in side for b in rest] + [(b, a) for a in side for b in rest]
        self._cut_links("reactive", links)

    # ---- the faults ------------------------------------------------------------------------------

    def _partition(self) -> None:
        rng = self.world.rng
        cluster = self.cluster
        brokers = [broker_node(b) for b in cluster.broker_ids]
        servers = [*brokers, CONTROLLER]
        shape = rng.choice(["isolate", "isolate-leader", "halves", "bridge", "one-way"])
        if shape == "isolate":
            side = [rng.choice(servers)]
        elif shape == "isolate-leader":
            leader = cluster.random_leader()
            side = [broker_node(leader)] if leader is not None else [rng.choice(servers)]
        elif shape in ("halves", "bridge"):
            shuffled = list(servers)
            rng.shuffle(shuffled)
            side = shuffled[: rng.randint(1, len(shuffled) // 2)]
        else:
            a, b = rng.sample(servers, 2)
            self._cut_links(shape, [(a, b)])
            return
        other = [s for s in servers if s not in side]
        if shape == "bridge" and len(other) >= 2:
            bridge = other.pop(rng.randrange(len(other)))
            del bridge  # the bridge node keeps its links to both sides
        if rng.random() < self.config.clients_cut_p:
            clients = cluster.client_nodes()
            if rng.random() < 0.5:
                side = side + clients
            else:
                other = other + clients
        links = [(a, b) for a in side for b in other] + [(b, a) for a in side for b in other]
        self._cut_links(shape, links)

    def _cut_links(self, shape: str, links: list[tuple[str, str]]) -> None:
        network = self.world.network
        network.cut(links)
        self._begin(f"partition-{shape}", lambda: network.heal(links), detail=links)

    def _crash(self) -> None:
        self._take_down("crash", self.cluster.crash)

    def _restart(self) -> None:
        self._take_down("restart", self.cluster.stop)

    def _power(self) -> None:
        if self.cluster.recovering_from_power_loss():
            return  # a second one now could take a majority of some partition's replicas
        self._take_down("power", self.cluster.power_loss)

    def _take_down(self, name: str, action: Callable[[int], None]) -> None:
        """Stop a random running broker with ``action``; the fault's end starts it again."""
        cluster = self.cluster
        broker_id = cluster.random_up_broker()
        if broker_id is None:
            return
        action(broker_id)
        self._begin(name, lambda: cluster.start(broker_id), self._down_ms(), broker_id)

    def _pause(self) -> None:
        broker_id = self.cluster.random_up_broker()
        if broker_id is None:
            return
        proc = self.cluster.brokers[broker_id].proc
        proc.pause()
        self._begin("pause", proc.resume, detail=broker_id)

    def _failover(self) -> None:
        cluster = self.cluster
        cluster.controller_down()
        self._begin("failover", cluster.controller_up, self.world.rng.randint(50, 3000))

    def _network(self) -> None:
        if any(f.name.startswith("network-") for f in self.active.values()):
            return  # one degradation at a time: each restores the base
        rng = self.world.rng
        network = self.world.network
        base = (network.drop_p, network.delay_ms_min, network.delay_ms_max)
        if rng.random() < 0.5:
            network.drop_p = rng.uniform(0.01, 0.1)
            name = "network-loss"
        else:
            network.delay_ms_min, network.delay_ms_max = 50, 150  # Jepsen's 100 ms ± 50 ms
            name = "network-slow"

        def restore() -> None:
            network.drop_p, network.delay_ms_min, network.delay_ms_max = base

        self._begin(name, restore)

    def _churn(self) -> None:
        """For the fault's duration, cut the current leader of a random partition off from
        every server for a moment, then the next one: leaders fail in quick succession, so
        followers meet diverging logs and ISR changes meet elections."""
        world = self.world
        cluster = self.cluster
        proc = cluster.driver
        state = {"on": True}
        servers = [*(broker_node(b) for b in cluster.broker_ids), CONTROLLER]

        async def churn() -> None:
            rng = world.rng
            network = world.network
            while state["on"]:
                leader = cluster.random_leader()
                if leader is not None:
                    node = broker_node(leader)
                    links = [(node, s) for s in servers if s != node]
                    links += [(s, node) for s in servers if s != node]
                    network.cut(links)
                    await proc.sleep(rng.randint(100, 2500))
                    network.heal(links)
                await proc.sleep(rng.randint(0, 800))

        def stop() -> None:
            state["on"] = False

        proc.spawn(churn())
        self._begin("churn", stop)

    def _down_ms(self) -> int:
        return self.world.rng.randint(0, 5000)
