"""Nemeses without a cluster: the pure choice of targets, the seeded schedule, and each nemesis's
start / stop / final-heal contract against a fake cluster that records what it was told (the
partition shapes are test_cuts.py's)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.chaos.cuts import complete_grudge, views
from raftlog.chaos.diskfault import Damage, DamageKind
from raftlog.chaos.nemesis import (
    NEMESIS_NAMES,
    CombinedNemesis,
    DiskNemesis,
    FaultRecord,
    KillNemesis,
    NemesisContext,
    PauseNemesis,
    PowerLossNemesis,
    make_nemesis,
)
from raftlog.chaos.schedule import Schedule, ScheduledFault, nemesis_rng
from raftlog.chaos.targets import Placement, StorageRisk, Targets, choose_targets


def nodes_of(n: int) -> tuple[int, ...]:
    return tuple(range(1, n + 1))


# ---- choosing targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "sizes"),
    [
        (Targets.ONE, {1}),
        (Targets.MINORITY, {1, 2}),
        (Targets.MAJORITY, {3}),
        (Targets.ALL, {5}),
    ],
)
def test_choose_targets_sizes(targets: Targets, sizes: set[int]) -> None:
    seen = {
        len(choose_targets(nodes_of(5), targets, random.Random(s), cluster_size=5))
        for s in range(40)
    }
    assert seen == sizes


def test_choose_targets_only_picks_candidates() -> None:
    rng = random.Random(3)
    assert choose_targets([], Targets.ONE, rng, cluster_size=3) == frozenset()
    assert choose_targets([2], Targets.MAJORITY, rng, cluster_size=3) == {2}
    assert choose_targets([1, 2], Targets.LEADERS, rng, cluster_size=3, leaders={2, 3}) == {2}


# ---- the schedule --------------------------------------------------------------------------------


def test_schedule_is_a_pure_function_of_its_arguments() -> None:
    a = Schedule(42, ("partition-halves", "kill", "pause"), time_limit_s=300).events()
    b = Schedule(42, ("partition-halves", "kill", "pause"), time_limit_s=300).events()
    c = Schedule(43, ("partition-halves", "kill", "pause"), time_limit_s=300).events()
    assert a == b and a != c
    assert {e.nemesis for e in a} == {"partition-halves", "kill", "pause"}
    assert all(isinstance(e, ScheduledFault) for e in a)
    start_at_s, name, duration_s = a[0]  # unpacks as a plain tuple
    assert (start_at_s, name, duration_s) == (a[0].start_at_s, a[0].nemesis, a[0].duration_s)


@given(
    seed=st.integers(0, 2**63),
    limit=st.floats(1, 500),
    interval=st.tuples(st.floats(0.1, 20), st.floats(0, 20)),
    duration=st.tuples(st.floats(0.1, 30), st.floats(0, 30)),
)
@settings(max_examples=200, deadline=None)
def test_schedule_is_bounded_and_faults_never_overlap(
    seed: int, limit: float, interval: tuple[float, float], duration: tuple[float, float]
) -> None:
    interval = (interval[0], interval[0] + interval[1])
    duration = (duration[0], duration[0] + duration[1])
    events = Schedule(seed, ("bridge",), interval, duration, limit, events_max=50).events()
    assert len(events) <= 50
    previous_end = 0.0
    for event in events:
        assert event.start_at_s >= previous_end + interval[0] - 0.002  # rounding to ms
        assert duration[0] - 0.001 <= event.duration_s <= duration[1] + 0.001
        assert event.start_at_s + event.duration_s <= limit + 0.002
        previous_end = event.start_at_s + event.duration_s


def test_schedule_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown nemesis"):
        Schedule(1, ("flood",))
    with pytest.raises(ValueError, match="at least one"):
        Schedule(1, ())
    with pytest.raises(ValueError, match="interval_s"):
        Schedule(1, ("kill",), interval_s=(5, 1))
    with pytest.raises(ValueError, match="duration_s"):
        Schedule(1, ("kill",), duration_s=(0, 1))
    with pytest.raises(ValueError, match="positive"):
        Schedule(1, ("kill",), time_limit_s=0)


def test_nemesis_rng_replays_and_differs_from_the_schedule_rng() -> None:
    assert nemesis_rng(5).random() == nemesis_rng(5).random()
    assert nemesis_rng(5).random() != random.Random(5).random()


# ---- nemeses against a fake cluster ------------------------------------------------------------


@dataclass
class FakeCluster:
    """Records every call; processes are flags. Satisfies ClusterControl."""

    size: int = 5
    grudge: dict[int, frozenset[int]] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    powered_off: set[int] = field(default_factory=set)
    files: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return nodes_of(self.size)

    def partition(self, groups: Sequence[Set[int]]) -> None:
        self.apply_grudge(complete_grudge(groups))

    def apply_grudge(self, grudge: Mapping[int, Set[int]]) -> None:
        self.grudge = {n: frozenset(g) for n, g in grudge.items() if g}
        self.calls.append(("grudge", self.grudge))

    def heal(self) -> None:
        self.grudge = {}
        self.calls.append(("heal", None))

    def kill(self, node: int) -> None:
        assert node not in self.stopped
        self.stopped.add(node)
        self.paused.discard(node)
        self.calls.append(("kill", node))

    def start(self, node: int) -> int:
        assert node in self.stopped
        self.stopped.discard(node)
        self.powered_off.discard(node)  # starting a powered-off node boots it
        self.calls.append(("start", node))
        return 1000 + node

    def pause(self, node: int) -> None:
        self.paused.add(node)
        self.calls.append(("pause", node))

    def resume(self, node: int) -> None:
        self.paused.discard(node)
        self.calls.append(("resume", node))

    def is_running(self, node: int) -> bool:
        return node not in self.stopped

    def is_paused(self, node: int) -> bool:
        return node in self.paused

    def power_off(self, node: int) -> Mapping[str, object]:
        assert node not in self.powered_off
        self.stopped.add(node)
        self.paused.discard(node)
        self.powered_off.add(node)
        self.calls.append(("power_off", node))
        return {"node": node, "bytes_before": 100, "bytes_after": 60}

    def is_powered_off(self, node: int) -> bool:
        return node in self.powered_off

    def data_files(self, node: int) -> list[tuple[str, int]]:
        return self.files.get(node, [])

    def damage_file(self, node: int, damage: Damage) -> Mapping[str, object]:
        assert node in self.stopped, "files are damaged only while the broker is down"
        self.calls.append(("damage", (node, damage)))
        return {**damage.to_json(), "changed": True}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.5
        return self.t


def context(
    leaders: Set[int] = frozenset(), controller: int | None = None, placement: Placement = None
) -> NemesisContext:
    return NemesisContext(
        Clock(), lambda: frozenset(leaders), lambda: controller, lambda: placement
    )


def full(*replicas: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (replicas, replicas)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in NEMESIS_NAMES
        if n not in ("kill", "pause", "combined", "power-loss", "disk", "membership")
    ],
)
def test_partition_nemeses_cut_then_heal(name: str) -> None:
    cluster, ctx = FakeCluster(), context(leaders={1, 4}, controller=2)
    nemesis = make_nemesis(name)
    started = nemesis.start(cluster, random.Random(9), ctx)
    assert started is not None and started.name == name and started.stop_s is None
    assert cluster.grudge, "some packets must be dropped"
    assert nemesis.start(cluster, random.Random(9), ctx) is None  # one fault at a time
    stopped = nemesis.stop(cluster, ctx)
    assert stopped is not None and stopped.stop_s is not None and stopped.stop_s > started.start_s
    assert (stopped.name, stopped.nodes, stopped.detail) == (
        started.name,
        started.nodes,
        started.detail,
    )
    assert cluster.grudge == {}
    assert nemesis.stop(cluster, ctx) is None  # nothing left to heal


def test_isolate_leaders_and_controller_target_the_roles() -> None:
    cluster = FakeCluster()
    record = make_nemesis("isolate-leaders").start(cluster, random.Random(1), context({1, 4}))
    assert record is not None and record.nodes == (1, 4)
    assert views(cluster.node_ids, cluster.grudge) == {
        1: {1},
        4: {4},
        2: {2, 3, 5},
        3: {2, 3, 5},
        5: {2, 3, 5},
    }
    cluster = FakeCluster()
    record = make_nemesis("isolate-controller").start(
        cluster, random.Random(1), context(controller=3)
    )
    assert record is not None and record.nodes == (3,)
    assert views(cluster.node_ids, cluster.grudge)[3] == {3}


def test_role_nemeses_do_nothing_when_the_role_is_unknown() -> None:
    cluster = FakeCluster()
    assert make_nemesis("isolate-leaders").start(cluster, random.Random(1), context()) is None
    assert make_nemesis("isolate-controller").start(cluster, random.Random(1), context()) is None
    assert cluster.calls == []


def test_kill_restarts_on_stop_and_final_heal_restarts_everyone() -> None:
    cluster, ctx = FakeCluster(), context()
    nemesis = KillNemesis()
    record = nemesis.start(cluster, random.Random(2), ctx)
    assert record is not None and len(record.nodes) == 1
    (victim,) = record.nodes
    assert not cluster.is_running(victim)
    healed = nemesis.stop(cluster, ctx)
    assert healed is not None and healed.stop_s is not None
    assert cluster.is_running(victim)
    # a fault that never got its stop (the run ended): final heal brings every node back
    nemesis = KillNemesis(Targets.MAJORITY)
    record = nemesis.start(cluster, random.Random(3), ctx)
    assert record is not None and len(record.nodes) == 3
    cluster.stopped.add(next(n for n in cluster.node_ids if n not in record.nodes))
    final = nemesis.final_heal(cluster, ctx)
    assert final is not None and final.nodes == record.nodes
    assert cluster.stopped == set()


def test_kill_only_picks_running_nodes() -> None:
    cluster, ctx = FakeCluster(size=3), context()
    cluster.stopped = {1, 2}
    record = KillNemesis().start(cluster, random.Random(0), ctx)
    assert record is not None and record.nodes == (3,)
    cluster.stopped = {1, 2, 3}
    assert KillNemesis().start(cluster, random.Random(0), ctx) is None


def test_pause_resumes_on_stop_and_final_heal() -> None:
    cluster, ctx = FakeCluster(), context()
    nemesis = PauseNemesis(Targets.MINORITY)
    record = nemesis.start(cluster, random.Random(4), ctx)
    assert record is not None and cluster.paused == set(record.nodes)
    assert nemesis.stop(cluster, ctx) is not None and cluster.paused == set()
    cluster.paused = {2, 5}  # left by someone else: the final heal resumes them too
    nemesis.final_heal(cluster, ctx)
    assert cluster.paused == set()


def test_combined_delegates_to_the_member_it_picked() -> None:
    cluster, ctx = FakeCluster(), context(leaders={2}, controller=2)
    combined = make_nemesis("combined", ["kill", "pause", "bridge"])
    assert isinstance(combined, CombinedNemesis)
    assert [m.name for m in combined.members] == ["kill", "pause", "bridge"]
    names = set()
    rng = random.Random(11)
    for _ in range(30):
        started = combined.start(cluster, rng, ctx)
        assert started is not None
        assert combined.start(cluster, rng, ctx) is None  # one at a time
        stopped = combined.stop(cluster, ctx)
        assert stopped is not None and stopped.name == started.name
        names.add(started.name)
        assert cluster.grudge == {} and cluster.stopped == set() and cluster.paused == set()
    assert names == {"kill", "pause", "bridge"}
    combined.start(cluster, rng, ctx)
    combined.final_heal(cluster, ctx)
    assert cluster.grudge == {} and cluster.stopped == set() and cluster.paused == set()


def test_make_nemesis_knows_every_name() -> None:
    for name in NEMESIS_NAMES:
        assert make_nemesis(name).name == name
    with pytest.raises(ValueError, match="unknown nemesis"):
        make_nemesis("meteor")


def run_schedule(seed: int) -> list[FaultRecord]:
    """What a runner does: each scheduled fault starts, then stops; the final heal last."""
    names = ("partition-halves", "majorities-ring", "bridge", "kill", "pause", "combined")
    cluster, ctx, rng = FakeCluster(), context({1}, 1), nemesis_rng(seed)
    nemeses = {name: make_nemesis(name) for name in names}
    records = []
    for event in Schedule(seed, names, time_limit_s=600):
        nemesis = nemeses[event.nemesis]
        for record in (nemesis.start(cluster, rng, ctx), nemesis.stop(cluster, ctx)):
            if record is not None:
                records.append(record)
    for nemesis in nemeses.values():
        nemesis.final_heal(cluster, ctx)
    assert cluster.grudge == {} and cluster.stopped == set() and cluster.paused == set()
    return records


def test_a_seeded_run_replays_exactly() -> None:
    first, again, other = run_schedule(2024), run_schedule(2024), run_schedule(2025)
    assert first == again
    assert first != other
    assert all(r.stop_s is not None for r in first[1::2])
    assert first[0].to_json()["name"] == first[0].name


def test_power_loss_turns_a_minority_off_and_boots_it_on_stop() -> None:
    cluster, ctx = FakeCluster(), context(placement=[full(1, 2, 3, 4, 5)])
    nemesis = PowerLossNemesis()
    record = nemesis.start(cluster, random.Random(5), ctx)
    assert record is not None and record.name == "power-loss"
    assert 1 <= len(record.nodes) <= 2  # a minority of 5
    assert cluster.powered_off == set(record.nodes) == cluster.stopped
    assert "dropped 40 B" in record.detail
    assert record.to_json()["facts"]["nodes"][str(record.nodes[0])]["bytes_after"] == 60
    assert nemesis.start(cluster, random.Random(5), ctx) is None  # one fault at a time
    healed = nemesis.stop(cluster, ctx)
    assert healed is not None and healed.facts == record.facts
    assert cluster.powered_off == set() and cluster.stopped == set()
    # the final heal boots anything still off, whoever turned it off
    cluster.power_off(3)
    nemesis.final_heal(cluster, ctx)
    assert cluster.powered_off == set()


def test_disk_damages_one_file_of_a_stopped_broker_and_restarts_it() -> None:
    cluster, ctx = FakeCluster(size=3), context(placement=[full(1, 2, 3)])
    log = "chaos-0/00000000000000000000.log"
    cluster.files = {n: [(log, 4096), ("chaos-0/00000000000000000000.index", 16)] for n in (1, 2)}
    nemesis = DiskNemesis()
    records = []
    for seed in range(20):
        record = nemesis.start(cluster, random.Random(seed), ctx)
        if record is None:  # node 3 has no files yet: nothing to damage there
            continue
        assert record.name == "disk" and record.nodes[0] in (1, 2)
        assert nemesis.stop(cluster, ctx) is not None
        records.append(record)
        assert cluster.stopped == set()  # started again at once
    assert records, "some seed must hit a node with files"
    kinds = {r.facts["kind"] for r in records}
    assert kinds == {"bitflip", "truncate"}
    assert all(r.facts["file"].startswith("chaos-0/") for r in records)
    damages = [c[1] for c in cluster.calls if c[0] == "damage"]
    assert len(damages) == len(records)
    assert [c[0] for c in cluster.calls[:3]] == ["kill", "damage", "start"]


def test_disk_damage_is_a_pure_choice() -> None:
    from raftlog.chaos.diskfault import choose_damage

    files = [("chaos-1/00000000000000000042.log", 100), ("chaos-1/00000000000000000042.index", 8)]
    a = [choose_damage(files, random.Random(s)) for s in range(50)]
    assert a == [choose_damage(files, random.Random(s)) for s in range(50)]
    assert {d.kind for d in a if d} == {DamageKind.BITFLIP, DamageKind.TRUNCATE}
    logs = sum(1 for d in a if d and d.path.endswith(".log"))
    assert logs > 25  # logs are preferred 3:1
    assert choose_damage([("state/data.mdb", 4096), ("chaos-0/x.log", 0)], random.Random()) is None


def test_combined_leaves_out_storage_faults_unless_asked() -> None:
    combined = make_nemesis("combined")
    assert isinstance(combined, CombinedNemesis)
    assert {m.name for m in combined.members}.isdisjoint({"power-loss", "disk"})
    asked = make_nemesis("combined", ["kill", "power-loss"])
    assert isinstance(asked, CombinedNemesis)
    assert [m.name for m in asked.members] == ["kill", "power-loss"]


def test_storage_faults_stay_inside_the_fault_model() -> None:
    """A minority of each partition's replicas (and of the voters) at risk at any instant: a
    faulted node counts until it is back in every ISR; unknown placement holds faults back."""
    placement: Placement = [full(1, 2, 3), full(3, 4, 5)]
    risk = StorageRisk()
    assert risk.allows({1, 4}, placement, voters=5)
    assert not risk.allows({1, 2}, placement, voters=5)  # two of partition 0's three
    assert not risk.allows({1}, None, voters=5)
    assert risk.choose(frozenset({1, 2}), [1, 2, 3, 4, 5], placement, 5, random.Random(1)) in (
        frozenset({1, 4}),
        frozenset({1, 5}),
    )
    risk.nodes = {3}  # powered back on but not yet in the ISRs
    lagging: Placement = [((1, 2, 3), (1, 2)), ((3, 4, 5), (4, 5))]
    risk.refresh(lagging, powered_off=set())
    assert risk.nodes == {3}
    assert risk.choose(frozenset({4}), [1, 2, 4, 5], lagging, 5, random.Random(1)) == frozenset()
    assert risk.skipped == 1
    risk.refresh(placement, powered_off=set())  # caught up: safe again
    assert risk.nodes == set()


def test_power_loss_skips_a_fault_that_would_leave_the_model() -> None:
    cluster = FakeCluster(size=3)
    ctx = context(placement=[((1, 2, 3), (1,))])  # 2 and 3 out of the ISR: 1 is the last safe
    cluster.power_off(2)  # 2 is off (at risk): hitting 1 or 3 as well is a majority of three
    ctx.storage_risk.nodes = {2}
    assert PowerLossNemesis().start(cluster, random.Random(3), ctx) is None
    cluster.powered_off.clear()
    assert cluster.powered_off == set() and ctx.storage_risk.skipped == 1
    assert cluster.calls == [("power_off", 2)]


class FakeMembership:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def reassign(self, partition: int, replicas: tuple[int, ...]) -> str:
        self.calls.append(("reassign", (partition, replicas)))
        return "started"

    def drain(self, node: int) -> str:
        self.calls.append(("drain", node))
        return "2 partition(s) moving, 0 refused"

    def settle(self, timeout_s: float) -> str:
        self.calls.append(("settle", timeout_s))
        return "no move in progress"


def test_membership_moves_partitions_or_drains_and_the_final_heal_waits_for_the_moves() -> None:
    cluster, control = FakeCluster(), FakeMembership()
    ctx = replace(context(placement=[full(1, 2, 3), full(2, 3, 4)]), membership=control)
    nemesis = make_nemesis("membership")
    rng = random.Random(5)
    details = []
    for _ in range(12):
        record = nemesis.start(cluster, rng, ctx)
        assert record is not None and record.stop_s is None
        details.append(record.detail)
        assert nemesis.stop(cluster, ctx) is not None
    kinds = {call[0] for call in control.calls}
    assert kinds == {"reassign", "drain"}  # both kinds, from one seeded rng
    for kind, args in control.calls:
        if kind == "reassign":
            partition, replicas = args  # type: ignore[misc]
            assert partition in (0, 1) and len(set(replicas)) == 3
            assert set(replicas) <= set(cluster.node_ids)
    assert any(d.startswith("reassign p") for d in details)
    assert any(d.startswith("drain ") for d in details)
    nemesis.final_heal(cluster, ctx)
    assert control.calls[-1][0] == "settle"
    # without an admin client (a unit harness) or a placement, it does nothing
    assert make_nemesis("membership").start(cluster, rng, context()) is None
