"""Nemeses: the faults a chaos run injects, Jepsen's way — each one a start, a stop that heals,
and a final heal.

Three layers; this module is the last, the only one that does anything:

1. **Choosing** (pure): which nodes a fault hits, from the node ids and a ``random.Random`` —
   the partition shapes as grudges in cuts.py (``random_halves``, ``isolation_groups``,
   ``majorities_ring``, ``bridge_grudge``; a *grudge* is Jepsen's: node → the nodes whose
   packets it drops), the targets of process and storage faults in targets.py
   (``choose_targets``, ``StorageRisk``).
2. **Scheduling** (pure): when each fault starts and how long it lasts — schedule.py's
   ``Schedule``, seeded, so a failing run is reproduced with its seed.
3. **Acting**: a ``Nemesis`` drives a ``ClusterControl`` (``NetnsCluster`` is one; tests use a
   fake). ``start`` returns a ``FaultRecord`` with ``stop_s=None``; ``stop`` heals and returns
   the same record with ``stop_s`` set; ``final_heal`` heals whatever its kind of fault could
   have left (every node restarted, every node resumed, the network whole) and is safe to call
   at any time. ``start`` returns None when there is nothing to do (no leaders known, a fault of
   this nemesis already active, no running node to kill).

One nemesis instance drives one fault at a time and is used from one thread (the runner's
nemesis thread); it is not thread-safe.

The packages (``NEMESIS_NAMES``)::

    partition-halves     random halves (the smaller half is the minority)
    isolate-node         one random node alone
    isolate-leaders      every partition leader alone, the rest together
    isolate-controller   the active controller alone
    majorities-ring      every node sees a majority, no two the same (5 nodes; see
                         cuts.majorities_ring)
    bridge               two halves joined by one node that sees both
    kill                 kill -9 a random node; heal = start it again
    pause                SIGSTOP a random node; heal = SIGCONT
    power-loss           a random minority loses power: SIGKILL, every write its disk had not
                         fsynced dropped (lazyfs decides, not the broker); heal = boot (a new
                         boot id) and start
    disk                 one random node: kill -9, a bit flip or a truncation in one of its
                         segment files (diskfault.py), start again at once; the fault's record
                         says which file, where and what (``facts``); heal = nothing to undo
    membership           move a workload partition to a random replica set, or (one time in
                         three) drain a random broker — while the other faults go on; a move
                         finishes by itself (heal = nothing; the final heal waits for them)
    combined             one of the enabled ones above, picked at start
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .cuts import (
    Grudge,
    bridge_grudge,
    complete_grudge,
    isolation_groups,
    random_halves,
    ring_grudge,
)
from .diskfault import Damage, choose_damage
from .targets import Placement, StorageRisk, Targets, choose_targets

__all__ = [
    "NEMESIS_NAMES",
    "BridgeNemesis",
    "ClusterControl",
    "CombinedNemesis",
    "Cut",
    "DiskNemesis",
    "FaultRecord",
    "HalvesNemesis",
    "IsolateControllerNemesis",
    "IsolateLeadersNemesis",
    "IsolateNodeNemesis",
    "KillNemesis",
    "MembershipControl",
    "MembershipNemesis",
    "Nemesis",
    "NemesisContext",
    "PartitionNemesis",
    "PauseNemesis",
    "PowerLossNemesis",
    "RingNemesis",
    "make_nemesis",
]

# ---- acting ---------------------------------------------------------------------------------


class ClusterControl(Protocol):
    """What a nemesis needs of a cluster (``raftlog.chaos.netns.NetnsCluster`` provides it)."""

    @property
    def node_ids(self) -> tuple[int, ...]: ...

    def partition(self, groups: Sequence[Set[int]]) -> None: ...

    def apply_grudge(self, grudge: Mapping[int, Set[int]]) -> None: ...

    def heal(self) -> None: ...

    def kill(self, node: int) -> None: ...

    def start(self, node: int) -> int: ...

    def pause(self, node: int) -> None: ...

    def resume(self, node: int) -> None: ...

    def is_running(self, node: int) -> bool: ...

    def is_paused(self, node: int) -> bool: ...

    # storage faults (``NetnsCluster`` with ``lazyfs=True`` for power loss)

    def power_off(self, node: int) -> Mapping[str, Any]: ...

    def is_powered_off(self, node: int) -> bool: ...

    def data_files(self, node: int) -> list[tuple[str, int]]: ...

    def damage_file(self, node: int, damage: Damage) -> Mapping[str, Any]: ...


def _no_leaders() -> frozenset[int]:
    return frozenset()


def _no_controller() -> int | None:
    return None


def _no_placement() -> Placement:
    return None


class MembershipControl(Protocol):
    """What the membership nemesis asks of a cluster's admin API (the runner's is an ``Admin``
    on the workload's topic). Each returns a line for the timeline, errors included."""

    def reassign(self, partition: int, replicas: tuple[int, ...]) -> str: ...

    def drain(self, node: int) -> str: ...

    def settle(self, timeout_s: float) -> str: ...


@dataclass(frozen=True, slots=True)
class NemesisContext:
    """What a nemesis may ask about the run: the clock and the cluster's current roles.

    ``now_s`` is seconds since the run started (the history's clock); ``leaders`` returns the
    brokers leading partitions now and ``controller`` the active controller (e.g.
    ``NetnsCluster.leaders(topics)`` / ``NetnsCluster.controller()``).
    """

    now_s: Callable[[], float]
    leaders: Callable[[], frozenset[int]] = _no_leaders
    controller: Callable[[], int | None] = _no_controller
    placement: Callable[[], Placement] = _no_placement
    storage_risk: StorageRisk = field(default_factory=StorageRisk)
    membership: MembershipControl | None = None


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One fault, for the history and the timeline.

    ``nodes`` are the nodes the fault targets: the isolated ones, the smaller half, the bridge
    node, every node for a ring, the killed, paused or powered-off ones. ``facts`` holds what a
    storage fault did, as data (which file, offset and kind; what a power loss dropped).
    """

    name: str
    start_s: float  # since the run started
    stop_s: float | None  # None while the fault is in force
    nodes: tuple[int, ...]
    detail: str
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "start_s": self.start_s,
            "stop_s": self.stop_s,
            "nodes": list(self.nodes),
            "detail": self.detail,
        }
        if self.facts:
            out["facts"] = dict(self.facts)
        return out


def _groups_text(groups: Sequence[Set[int]]) -> str:
    return " | ".join(",".join(map(str, sorted(g))) for g in groups)


def _grudge_text(grudge: Grudge) -> str:
    cut = [f"{n}✕{','.join(map(str, sorted(g)))}" for n, g in sorted(grudge.items()) if g]
    return "drops: " + ("; ".join(cut) or "none")


class Nemesis(ABC):
    """A fault kind; see the module docstring for the start / stop / final_heal contract."""

    name: str = "nemesis"

    def __init__(self) -> None:
        self.active: FaultRecord | None = None

    @abstractmethod
    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None: ...

    @abstractmethod
    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None: ...

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        return self.stop(cluster, context)

    def _begin(
        self,
        context: NemesisContext,
        nodes: Set[int],
        detail: str,
        facts: Mapping[str, Any] | None = None,
    ) -> FaultRecord:
        self.active = FaultRecord(
            self.name, context.now_s(), None, tuple(sorted(nodes)), detail, dict(facts or {})
        )
        return self.active

    def _end(self, context: NemesisContext) -> FaultRecord | None:
        record, self.active = self.active, None
        return None if record is None else replace(record, stop_s=context.now_s())


# -- network partitions --


@dataclass(frozen=True, slots=True)
class Cut:
    """A partition to make: the grudge, the nodes it targets, a line for the timeline."""

    grudge: Grudge
    nodes: frozenset[int]
    detail: str


class PartitionNemesis(Nemesis):
    """A network partition; subclasses only choose the cut. Heal = the whole network back."""

    @abstractmethod
    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None: ...

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        cut = self.choose(tuple(cluster.node_ids), rng, context)
        if cut is None:
            return None
        cluster.apply_grudge(cut.grudge)
        return self._begin(context, cut.nodes, cut.detail)

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if self.active is None:
            return None
        cluster.heal()
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        cluster.heal()  # also when stop was never reached
        return self._end(context)


def _groups_cut(groups: Sequence[Set[int]], nodes: Set[int]) -> Cut:
    return Cut(complete_grudge(groups), frozenset(nodes), _groups_text(groups))


class HalvesNemesis(PartitionNemesis):
    name = "partition-halves"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        groups = random_halves(nodes, rng)
        return _groups_cut(groups, groups[0])


class IsolateNodeNemesis(PartitionNemesis):
    name = "isolate-node"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        node = rng.choice(sorted(nodes))
        return _groups_cut(isolation_groups(nodes, {node}), {node})


class IsolateLeadersNemesis(PartitionNemesis):
    name = "isolate-leaders"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        leaders = frozenset(context.leaders()) & frozenset(nodes)
        if not leaders:
            return None
        return _groups_cut(isolation_groups(nodes, leaders), leaders)


class IsolateControllerNemesis(PartitionNemesis):
    name = "isolate-controller"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        controller = context.controller()
        if controller is None or controller not in nodes:
            return None
        return _groups_cut(isolation_groups(nodes, {controller}), {controller})


class RingNemesis(PartitionNemesis):
    name = "majorities-ring"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        grudge = ring_grudge(nodes, rng)
        return Cut(grudge, frozenset(nodes), _grudge_text(grudge))


class BridgeNemesis(PartitionNemesis):
    name = "bridge"

    def choose(
        self, nodes: tuple[int, ...], rng: random.Random, context: NemesisContext
    ) -> Cut | None:
        bridge, grudge = bridge_grudge(nodes, rng)
        return Cut(grudge, frozenset({bridge}), f"bridge {bridge}; {_grudge_text(grudge)}")


# -- processes --


class KillNemesis(Nemesis):
    """kill -9 the targets; heal = start them again (the runner waits for them if it wants)."""

    name = "kill"

    def __init__(self, targets: Targets = Targets.ONE) -> None:
        super().__init__()
        self.targets = targets

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        running = [n for n in cluster.node_ids if cluster.is_running(n)]
        leaders = context.leaders() if self.targets is Targets.LEADERS else frozenset()
        chosen = choose_targets(
            running, self.targets, rng, cluster_size=len(cluster.node_ids), leaders=leaders
        )
        if not chosen:
            return None
        for node in sorted(chosen):
            cluster.kill(node)
        return self._begin(context, chosen, f"SIGKILL {','.join(map(str, sorted(chosen)))}")

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if self.active is None:
            return None
        for node in self.active.nodes:
            if not cluster.is_running(node):
                cluster.start(node)
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        for node in cluster.node_ids:
            if not cluster.is_running(node):
                cluster.start(node)
        return self._end(context)


class PauseNemesis(Nemesis):
    """SIGSTOP the targets; heal = SIGCONT."""

    name = "pause"

    def __init__(self, targets: Targets = Targets.ONE) -> None:
        super().__init__()
        self.targets = targets

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        awake = [n for n in cluster.node_ids if cluster.is_running(n) and not cluster.is_paused(n)]
        leaders = context.leaders() if self.targets is Targets.LEADERS else frozenset()
        chosen = choose_targets(
            awake, self.targets, rng, cluster_size=len(cluster.node_ids), leaders=leaders
        )
        if not chosen:
            return None
        for node in sorted(chosen):
            cluster.pause(node)
        return self._begin(context, chosen, f"SIGSTOP {','.join(map(str, sorted(chosen)))}")

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if self.active is None:
            return None
        for node in self.active.nodes:
            if cluster.is_paused(node):
                cluster.resume(node)
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        for node in cluster.node_ids:
            if cluster.is_paused(node):
                cluster.resume(node)
        return self._end(context)


# -- storage --


def _storage_targets(
    cluster: ClusterControl,
    context: NemesisContext,
    wanted: frozenset[int],
    candidates: Sequence[int],
    rng: random.Random,
) -> frozenset[int]:
    """What a storage fault may hit now within the fault model; those nodes become at risk."""
    risk, placement = context.storage_risk, context.placement()
    risk.refresh(placement, {n for n in cluster.node_ids if cluster.is_powered_off(n)})
    chosen = risk.choose(wanted, candidates, placement, len(cluster.node_ids), rng)
    risk.nodes |= chosen
    return chosen


class PowerLossNemesis(Nemesis):
    """Cut the power of the targets (default: a random minority): each broker SIGKILLed and its
    disk's unsynced writes dropped; they stay off for the fault's duration. Heal = boot (a new
    boot id, the disk mounted again) and start."""

    name = "power-loss"

    def __init__(self, targets: Targets = Targets.MINORITY) -> None:
        super().__init__()
        self.targets = targets

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        powered = [n for n in cluster.node_ids if not cluster.is_powered_off(n)]
        leaders = context.leaders() if self.targets is Targets.LEADERS else frozenset()
        wanted = choose_targets(
            powered, self.targets, rng, cluster_size=len(cluster.node_ids), leaders=leaders
        )
        chosen = _storage_targets(cluster, context, wanted, powered, rng)
        if not chosen:
            return None
        lost: dict[str, Any] = {}
        texts = []
        for node in sorted(chosen):
            what = dict(cluster.power_off(node))
            lost[str(node)] = what
            dropped = int(what.get("bytes_before", 0)) - int(what.get("bytes_after", 0))
            texts.append(f"{node} (disk dropped {dropped} B)")
        return self._begin(context, chosen, "power off " + ", ".join(texts), {"nodes": lost})

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if self.active is None:
            return None
        for node in self.active.nodes:
            if not cluster.is_running(node):
                cluster.start(node)  # a powered-off node boots
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        for node in cluster.node_ids:
            if cluster.is_powered_off(node) or not cluster.is_running(node):
                cluster.start(node)
        return self._end(context)


class DiskNemesis(Nemesis):
    """A bit flip or a truncation in one segment file of one random running node: kill -9 it,
    damage the file, start it again at once (the damage is the fault, not the downtime). The
    record's ``facts`` say which file, where and what. Nothing to heal."""

    name = "disk"

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        running = [n for n in cluster.node_ids if cluster.is_running(n)]
        wanted = choose_targets(running, Targets.ONE, rng, cluster_size=len(cluster.node_ids))
        chosen = _storage_targets(cluster, context, wanted, running, rng)
        if not chosen:
            return None
        node = min(chosen)
        damage = choose_damage(cluster.data_files(node), rng)
        if damage is None:
            return None  # nothing written yet
        cluster.kill(node)
        try:
            done = dict(cluster.damage_file(node, damage))
        finally:
            cluster.start(node)
        return self._begin(context, {node}, f"node {node}: {damage.text()}", done)

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        return self._end(context)


# -- membership --

DRAIN_SHARE = 1 / 3  # of membership faults; the others reassign one partition


class MembershipNemesis(Nemesis):
    """Partitions move while other faults go on: a reassignment of one workload partition to a
    random set of brokers (as many as it has replicas), or a drain of a random broker. Nothing
    to heal: a move completes by itself once its new replicas are in sync; the final heal waits
    (bounded) until none is in progress, so the final checks see settled replica sets."""

    name = "membership"

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        control = context.membership
        if self.active is not None or control is None:
            return None
        nodes = sorted(cluster.node_ids)
        if rng.random() < DRAIN_SHARE:
            node = rng.choice(nodes)
            return self._begin(context, {node}, f"drain {node}: {control.drain(node)}")
        placement = context.placement()
        if not placement:
            return None
        partition = rng.randrange(len(placement))
        replicas = placement[partition][0]
        target = tuple(rng.sample(nodes, min(len(replicas), len(nodes))))
        line = control.reassign(partition, target)
        return self._begin(
            context,
            set(replicas) | set(target),
            f"reassign p{partition} {','.join(map(str, replicas))} → "
            f"{','.join(map(str, target))}: {line}",
        )

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if context.membership is not None:
            context.membership.settle(90.0)
        return self._end(context)


# -- combined --


class CombinedNemesis(Nemesis):
    """At each start, one of its nemeses (picked with the rng); stop and heal go to that one.
    The final heal runs every member's, so nothing any of them did is left behind."""

    name = "combined"

    def __init__(self, members: Sequence[Nemesis]) -> None:
        super().__init__()
        if not members:
            raise ValueError("combined needs at least one nemesis")
        self.members = tuple(members)
        self._current: Nemesis | None = None

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self._current is not None:
            return None
        member = rng.choice(self.members)
        record = member.start(cluster, rng, context)
        if record is not None:
            self._current = member
        return record

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        member, self._current = self._current, None
        return None if member is None else member.stop(cluster, context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        current, self._current = self._current, None
        healed = None
        for member in self.members:
            record = member.final_heal(cluster, context)
            if member is current:
                healed = record
        return healed


_FACTORIES: dict[str, Callable[[], Nemesis]] = {
    HalvesNemesis.name: HalvesNemesis,
    IsolateNodeNemesis.name: IsolateNodeNemesis,
    IsolateLeadersNemesis.name: IsolateLeadersNemesis,
    IsolateControllerNemesis.name: IsolateControllerNemesis,
    RingNemesis.name: RingNemesis,
    BridgeNemesis.name: BridgeNemesis,
    KillNemesis.name: KillNemesis,
    PauseNemesis.name: PauseNemesis,
    PowerLossNemesis.name: PowerLossNemesis,
    DiskNemesis.name: DiskNemesis,
    MembershipNemesis.name: MembershipNemesis,
}

NEMESIS_NAMES: tuple[str, ...] = (*_FACTORIES, CombinedNemesis.name)
# storage faults need lazyfs mounts (power loss) and are asked for by name, never by default;
# so are membership changes (they need an admin client: the runner's)
_BY_NAME_ONLY = frozenset({PowerLossNemesis.name, DiskNemesis.name, MembershipNemesis.name})


def make_nemesis(name: str, enabled: Sequence[str] = ()) -> Nemesis:
    """A fresh nemesis by name; ``combined`` is made of ``enabled`` (default: all the others
    but the storage faults)."""
    if name == CombinedNemesis.name:
        default = [n for n in _FACTORIES if n not in _BY_NAME_ONLY]
        members = [n for n in (enabled or default) if n != CombinedNemesis.name]
        return CombinedNemesis([make_nemesis(n) for n in members])
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(NEMESIS_NAMES)}")
    return factory()
