"""Which faults a run injects, and when: ``--nemesis`` names, the unclean-election scenario, and
the thread that follows a fault plan.

Pure except the two scenario nemeses' ``start``/``stop`` (they drive a ``ClusterControl``) and
``NemesisThread``, which calls nemeses at the planned times and logs what happened in a
``FaultLog``.

**Names.** ``--nemesis`` takes a comma-separated list of *families* and nemesis names:

    partition   every partition nemesis (halves, isolate-node, isolate-leaders,
                isolate-controller, bridge; majorities-ring too with 5 nodes)
    kill, pause, power-loss, disk, and any name of ``nemesis.NEMESIS_NAMES`` (power-loss puts
                every data dir on a lazyfs mount: disks.py, lazyfs.py)
    unclean-leader   the scripted scenario below (alone)
    none        no faults (a baseline)

``schedule_names`` turns that into the weighted name tuple ``schedule.Schedule`` draws from, so
each family the user named is equally likely and the kinds inside a family share its weight.

**The unclean-leader scenario** (Kafka 0.8, 2013 — Jepsen's Kafka analysis, aphyr.com/posts/293):
make the ISR of one partition shrink to its leader alone while the leader keeps acknowledging, then
kill the leader so that an out-of-sync replica is elected. It needs a topic with at least one
broker that is *not* a replica of the target partition (the runner creates the topic with
replication factor min(3, nodes − 1): 2 on 3 nodes, 3 on 5) and a target whose replicas exclude the
active controller, so that cutting the leader from its followers leaves the metadata quorum and
every broker's heartbeats to the controller intact. The script:

1. ``cut-leader-replication`` (at 5 s): both directions between the leader L and each follower
   are cut; everyone still reaches the controller. The followers stop fetching; after
   ``replica_lag_ms_max`` L proposes the ISR {L} and the controller commits it. With
   ``min.insync.replicas=1`` L acknowledges alone from then on (``solo_s`` seconds); with 2 it
   refuses (NOT_ENOUGH_REPLICAS, a definite failure).
2. ``kill-cut-leader`` (just before the cut heals): SIGKILL L. The controller fences it after
   ``session_timeout_ms``; no ISR member is live, so with ``unclean.leader.election.enable``
   the first live replica — a follower that missed L's solo writes — leads, and new writes get
   the offsets of L's acknowledged ones. Without it the partition stays offline.
3. L restarts at the end of the kill window and follows the new leader: it truncates its
   divergent suffix (KIP-101/279), and the acknowledged writes it alone had are gone.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from .nemesis import (
    NEMESIS_NAMES,
    ClusterControl,
    FaultRecord,
    Nemesis,
    NemesisContext,
)
from .schedule import ScheduledFault

__all__ = [
    "SCENARIO_NAMES",
    "UNCLEAN_SCENARIO",
    "CutLeaderReplicationNemesis",
    "FaultLog",
    "KillCutLeaderNemesis",
    "NemesisThread",
    "PartitionState",
    "UncleanPlan",
    "choose_unclean_target",
    "families",
    "fault_actions",
    "parse_nemeses",
    "scenario_nemeses",
    "schedule_names",
    "unclean_script",
]

logger = logging.getLogger(__name__)

UNCLEAN_SCENARIO = "unclean-leader"
CUT_STEP = "cut-leader-replication"
KILL_STEP = "kill-cut-leader"
SCENARIO_NAMES = (UNCLEAN_SCENARIO,)
NO_FAULTS = "none"

_PARTITION_KINDS = (
    "partition-halves",
    "isolate-node",
    "isolate-leaders",
    "isolate-controller",
    "bridge",
)


def families(nodes: int) -> dict[str, tuple[str, ...]]:
    """Family name → the nemesis names in it, for a cluster of ``nodes``."""
    partition = _PARTITION_KINDS + (("majorities-ring",) if nodes >= 5 else ())
    return {
        "partition": partition,
        "kill": ("kill",),
        "pause": ("pause",),
        "power-loss": ("power-loss",),
        "disk": ("disk",),
    }


def parse_nemeses(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A ``--nemesis`` value → its names, validated; raises ValueError with the known names."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise ValueError("--nemesis needs at least one name (or 'none')")
    known = set(families(5)) | set(NEMESIS_NAMES) | set(SCENARIO_NAMES) | {NO_FAULTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for special in (*SCENARIO_NAMES, NO_FAULTS):
        if special in names and len(names) > 1:
            raise ValueError(f"{special!r} runs alone, not with {', '.join(names)}")
    return names


def schedule_names(names: Sequence[str], nodes: int) -> tuple[str, ...]:
    """The weighted tuple of nemesis names a ``Schedule`` draws from (see the module doc)."""
    table = families(nodes)
    groups = [table.get(n, (n,)) for n in names if n != NO_FAULTS]
    if not groups:
        return ()
    weight = math.lcm(*(len(g) for g in groups))
    out: list[str] = []
    for group in groups:
        for name in group:
            out.extend([name] * (weight // len(group)))
    return tuple(out)


# ---- the unclean-leader scenario -----------------------------------------------------------


def unclean_script(
    *,
    replica_lag_ms_max: int,
    session_timeout_ms: int,
    time_limit_s: float,
    cut_at_s: float = 5.0,
    solo_s: float = 6.0,
    new_leader_s: float = 8.0,
) -> list[ScheduledFault]:
    """The scenario's timeline; raises ValueError when ``time_limit_s`` is too short for it.

    The cut lasts the ISR-shrink time (lag limit + one second for the leader's periodic check
    and the controller's commit) plus ``solo_s`` of acknowledgements by the leader alone; the
    kill starts half a second before the cut heals (so the followers never catch up) and lasts
    the fencing time plus ``new_leader_s`` of writes to the uncleanly elected leader.
    """
    kill_at = cut_at_s + replica_lag_ms_max / 1000 + 1.0 + solo_s
    cut = ScheduledFault(cut_at_s, CUT_STEP, round(kill_at + 0.5 - cut_at_s, 3))
    kill = ScheduledFault(kill_at, KILL_STEP, round(session_timeout_ms / 1000 + new_leader_s, 3))
    needed = kill.start_at_s + kill.duration_s + 3.0
    if time_limit_s < needed:
        raise ValueError(
            f"the {UNCLEAN_SCENARIO} scenario needs --time-limit >= {math.ceil(needed)} s "
            f"with replica_lag_ms_max={replica_lag_ms_max}"
        )
    return [cut, kill]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition as the freshest metadata answer shows it."""

    partition: int
    leader: int  # -1: offline
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def followers(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r != self.leader)


def choose_unclean_target(
    partitions: Sequence[PartitionState], controller: int | None
) -> PartitionState | None:
    """The partition to attack: led, with followers, its whole replica set in sync; best when
    the controller holds no replica of it (nothing we cut touches the metadata quorum), else
    when the controller is not one of its followers (the leader still reaches it). Ties go to
    the lowest partition id, so the choice replays."""
    ok = [p for p in partitions if p.leader >= 0 and p.followers and set(p.isr) == set(p.replicas)]
    ok.sort(key=lambda p: p.partition)
    for p in ok:
        if controller is not None and controller not in p.replicas:
            return p
    for p in ok:
        if controller is None or controller not in p.followers:
            return p
    return None


@dataclass(slots=True)
class UncleanPlan:
    """What the first step chose, for the second. Owned by the nemesis thread."""

    target: PartitionState | None = None
    controller: int | None = None


class CutLeaderReplicationNemesis(Nemesis):
    """Step 1: cut the target's leader from its followers (both ways); heal = the whole net."""

    name = CUT_STEP

    def __init__(
        self,
        plan: UncleanPlan,
        partitions: Callable[[], Sequence[PartitionState]],
    ) -> None:
        super().__init__()
        self.plan = plan
        self.partitions = partitions

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        if self.active is not None:
            return None
        controller = context.controller()
        target = choose_unclean_target(self.partitions(), controller)
        if target is None:
            return None
        leader, followers = target.leader, frozenset(target.followers)
        # only L↔followers is cut (a grudge: node → the nodes whose packets it drops); every
        # other pair, the controller's links included, stays whole
        grudge = {leader: followers} | {f: frozenset({leader}) for f in followers}
        cluster.apply_grudge(grudge)
        self.plan.target = target
        self.plan.controller = controller
        detail = (
            f"partition {target.partition}: leader {leader} cut from followers "
            f"{','.join(map(str, sorted(followers)))} (controller {controller})"
        )
        return self._begin(context, {leader}, detail)

    def stop(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        if self.active is None:
            return None
        cluster.heal()
        return self._end(context)

    def final_heal(self, cluster: ClusterControl, context: NemesisContext) -> FaultRecord | None:
        cluster.heal()
        return self._end(context)


class KillCutLeaderNemesis(Nemesis):
    """Step 2: SIGKILL the leader step 1 cut off; heal = start it again."""

    name = KILL_STEP

    def __init__(self, plan: UncleanPlan) -> None:
        super().__init__()
        self.plan = plan

    def start(
        self, cluster: ClusterControl, rng: random.Random, context: NemesisContext
    ) -> FaultRecord | None:
        target = self.plan.target
        if self.active is not None or target is None or not cluster.is_running(target.leader):
            return None
        cluster.kill(target.leader)
        detail = f"SIGKILL {target.leader} (leader of partition {target.partition}, cut off)"
        return self._begin(context, {target.leader}, detail)

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


def scenario_nemeses(
    partitions: Callable[[], Sequence[PartitionState]],
) -> Mapping[str, Nemesis]:
    """The unclean scenario's two steps, sharing one plan."""
    plan = UncleanPlan()
    return {
        CUT_STEP: CutLeaderReplicationNemesis(plan, partitions),
        KILL_STEP: KillCutLeaderNemesis(plan),
    }


# ---- following a plan -------------------------------------------------------------------


def fault_actions(events: Sequence[ScheduledFault]) -> list[tuple[float, int, int, str]]:
    """(time s, order, event index, "start"/"stop") sorted: every event's start and stop; at one
    instant stops come first. Events may overlap (the scenario's do); one nemesis name never
    has two events in force at once in the plans above."""
    actions = []
    for i, e in enumerate(events):
        actions.append((e.start_at_s, 1, i, "start"))
        actions.append((e.start_at_s + e.duration_s, 0, i, "stop"))
    return sorted(actions)


# ---- the fault log and the nemesis thread ------------------------------------------------------


class FaultLog:
    """Faults started and stopped, for the live view and the results. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[FaultRecord] = []
        self._done: list[FaultRecord] = []
        self.errors: list[str] = []

    def started(self, record: FaultRecord) -> None:
        with self._lock:
            self._active.append(record)

    def stopped(self, record: FaultRecord) -> None:
        with self._lock:
            for i, r in enumerate(self._active):
                if r.name == record.name and r.start_s == record.start_s:
                    del self._active[i]
                    break
            self._done.append(record)

    def error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
        logger.warning("nemesis: %s", message)

    def close_all(self, now_s: float) -> None:
        """Anything still marked active ends now (the final heal has run)."""
        with self._lock:
            for r in self._active:
                self._done.append(replace(r, stop_s=now_s))
            self._active.clear()

    @property
    def active(self) -> tuple[FaultRecord, ...]:
        with self._lock:
            return tuple(self._active)

    @property
    def done(self) -> tuple[FaultRecord, ...]:
        with self._lock:
            return tuple(sorted(self._done, key=lambda r: r.start_s))


class NemesisThread(threading.Thread):
    """Follows the fault plan: start each event at its time, stop it after its duration."""

    def __init__(
        self,
        cluster: ClusterControl,
        nemeses: Mapping[str, Nemesis],
        events: Sequence[ScheduledFault],
        rng: random.Random,
        context: NemesisContext,
        faults: FaultLog,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="chaos-nemesis", daemon=True)
        self.cluster = cluster
        self.nemeses = nemeses
        self.events = events
        self.rng = rng
        self.context = context
        self.faults = faults
        self.stop_event = stop

    def run(self) -> None:
        started: set[int] = set()
        for at_s, _, index, kind in fault_actions(self.events):
            wait = at_s - self.context.now_s()
            if wait > 0 and self.stop_event.wait(wait):
                return
            if self.stop_event.is_set():
                return
            event = self.events[index]
            nemesis = self.nemeses[event.nemesis]
            try:
                if kind == "start":
                    record = nemesis.start(self.cluster, self.rng, self.context)
                    if record is None:
                        self.faults.error(f"{event.nemesis} at {at_s:.1f} s skipped: nothing to do")
                        continue
                    started.add(index)
                    self.faults.started(record)
                elif index in started:
                    record = nemesis.stop(self.cluster, self.context)
                    if record is not None:
                        self.faults.stopped(record)
            except Exception as exc:  # a fault that could not be made or healed: say it, go on
                self.faults.error(f"{event.nemesis} {kind} at {at_s:.1f} s: {exc}")
