"""Rule 7 of the metadata machine: a replica that may have lost acknowledged records (a power
loss, a damaged log) is never elected while a replica that cannot have lost them exists.

Scenario tests first (the issue's power-loss sequence among them), then a hypothesis model that
tracks, per partition, which replicas hold every committed record, and checks every election.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftlog.proto.codes import ErrorCode
from raftlog.raft.assignment import assign_replicas
from raftlog.raft.commands import (
    AlterPartition,
    AlterTopicConfig,
    CreateTopic,
    ElectLeader,
    FenceBroker,
    MoveLeader,
    RegisterBroker,
    ReplicasDamaged,
    UnfenceBroker,
    decode_command,
    encode_command,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import NO_LEADER

from .test_metadata import cluster, create, part, run


def restart(state: MetadataState, broker: int, incarnation: int, *, unclean: bool) -> None:
    """A new process of ``broker`` registers and is unfenced (it heartbeats)."""
    result = run(
        state, RegisterBroker(broker, f"127.0.0.1:{9000 + broker}", incarnation, None, unclean)
    )
    assert result["ok"], result
    assert run(state, UnfenceBroker(broker, incarnation))["ok"]


def test_commands_carry_the_unclean_flag_and_damage_reports() -> None:
    for command in (
        RegisterBroker(1, "h:1", 7, "r", True),
        ReplicasDamaged(2, 9, (("t", 0), ("u", 3))),
    ):
        assert decode_command(encode_command(command)) == command


def test_the_issue_scenario_elects_the_replica_that_kept_the_data() -> None:
    """5 brokers, RF 3, min ISR 2: C stops, L crashes, A (now sole ISR) loses power."""
    state = cluster(5)
    create(state, "t", (1, 2, 3), min_insync_replicas="2")  # L=1, A=2, C=3
    assert run(state, FenceBroker(3, 103))["ok"]  # C stops: ISR {1, 2} (still min ISR)
    assert (part(state).isr, part(state).elr) == ((1, 2), ())
    assert run(state, FenceBroker(1, 101))["ok"]  # L crashes: A leads alone, L is eligible
    p = part(state)
    assert (p.leader, p.isr, p.elr) == (2, (2,), (1,))
    # A loses power and comes back: it may have lost its unsynced tail, so it may not lead
    restart(state, 2, 202, unclean=True)
    p = part(state)
    assert (p.leader, p.isr, p.elr) == (NO_LEADER, (), (1,))
    assert not state.electable(p)
    assert run(state, ElectLeader((("t", 0),)))["partitions"] == [
        ["t", 0, ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE]
    ]
    assert list(state.violations()) == []
    # C comes back too: it was out of sync, still not electable
    restart(state, 3, 203, unclean=False)
    assert part(state).leader == NO_LEADER
    # L comes back (a crash: its page cache held everything) and leads
    restart(state, 1, 201, unclean=False)
    p = part(state)
    assert (p.leader, p.isr, p.elr, p.last_known_elr) == (1, (1,), (), ())
    # A catches up and rejoins; with the ISR at min ISR again, nothing is left over
    assert run(state, AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2)))["ok"]
    assert (part(state).isr, part(state).elr) == ((1, 2), ())


def test_a_crash_keeps_the_sole_isr_member_electable() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), min_insync_replicas="2")
    run(state, FenceBroker(3, 103))
    run(state, FenceBroker(1, 101))
    restart(state, 2, 202, unclean=False)  # kill -9, same boot: nothing lost
    p = part(state)
    assert (p.leader, p.isr) == (2, (2,))


def test_power_loss_of_a_follower_takes_it_out_of_the_isr_only() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), min_insync_replicas="2")
    restart(state, 3, 203, unclean=True)
    p = part(state)
    assert (p.leader, p.isr, p.elr) == (1, (1, 2), ())
    assert p.leader_epoch == 0  # the leader did not change


def test_elr_members_lead_when_the_isr_is_gone_and_are_cleared_at_min_isr() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), min_insync_replicas="3")
    run(state, FenceBroker(3, 103))  # ISR {1, 2} < 3: 3 is eligible
    assert (part(state).isr, part(state).elr) == ((1, 2), (3,))
    run(state, FenceBroker(1, 101))
    assert (part(state).leader, part(state).isr, part(state).elr) == (2, (2,), (1, 3))
    run(state, FenceBroker(2, 102))  # KIP-841: the last ISR member stays
    assert (part(state).leader, part(state).isr, part(state).elr) == (NO_LEADER, (2,), (1, 3))
    run(state, UnfenceBroker(3, 103))  # an ELR member leads alone
    p = part(state)
    assert (p.leader, p.isr, p.elr) == (3, (3,), (1, 2))
    restart(state, 1, 201, unclean=False)
    restart(state, 2, 202, unclean=False)
    p = part(state)
    assert run(state, AlterPartition("t", 0, 3, p.leader_epoch, p.partition_epoch, (1, 2, 3)))["ok"]
    assert (part(state).isr, part(state).elr) == ((1, 2, 3), ())


def test_damage_report_moves_leadership_to_an_intact_isr_member() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), (2, 3, 1), min_insync_replicas="2")
    result = run(state, ReplicasDamaged(1, 101, (("t", 0), ("t", 1), ("nope", 0))))
    assert result["ok"], result
    assert (part(state, "t", 0).leader, part(state, "t", 0).isr) == (2, (2, 3))
    assert (part(state, "t", 1).leader, part(state, "t", 1).isr) == (2, (2, 3))
    assert run(state, ReplicasDamaged(1, 999, (("t", 0),)))["error"] == ErrorCode.STALE_BROKER_EPOCH


def test_no_safe_replica_left_stays_offline_until_an_operator_allows_unclean() -> None:
    """The whole ISR lost power (outside the fault model): the partition stays offline rather
    than elect a replica that may have lost acknowledged records, even when all of them are
    back; an operator's unclean election prefers the last known safe one."""
    state = cluster(3)
    create(state, "t", (1, 2, 3), min_insync_replicas="1")
    run(state, FenceBroker(3, 103))  # ISR {1, 2} >= min ISR: 3 is not eligible
    restart(state, 1, 201, unclean=True)  # ISR {2}
    assert (part(state).leader, part(state).isr) == (2, (2,))
    restart(state, 2, 202, unclean=True)
    p = part(state)
    assert (p.leader, p.isr, p.elr, p.last_known_elr) == (NO_LEADER, (), (), (2,))
    restart(state, 3, 203, unclean=False)
    assert part(state).leader == NO_LEADER
    assert not state.electable(part(state))
    assert run(state, AlterTopicConfig("t", (("unclean.leader.election.enable", "true"),)))["ok"]
    assert state.electable(part(state))
    run(state, ElectLeader((("t", 0),)))
    p = part(state)
    assert (p.leader, p.isr, p.last_known_elr) == (2, (2,), ())


def test_unclean_topics_may_still_elect_anything_live() -> None:
    state = cluster(3)
    create(state, "t", (1, 2), min_insync_replicas="1", unclean_leader_election_enable="true")
    run(state, FenceBroker(2, 102))
    restart(state, 1, 201, unclean=True)
    assert (part(state).leader, part(state).isr) == (1, (1,))


def test_snapshots_keep_the_eligibility_and_read_version_1() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), min_insync_replicas="3")
    run(state, FenceBroker(3, 103))
    copy = MetadataState.from_snapshot(state.snapshot())
    assert part(copy).elr == (3,)
    assert copy.snapshot() == state.snapshot()


# ---- the model: who holds every committed record ------------------------------------------

BROKERS = (1, 2, 3, 4)


@dataclass
class _Truth:
    safe: set[int]  # replicas holding every committed record
    unclean: bool
    leader: int = NO_LEADER
    leader_epoch: int = 0
    losses: list[str] = field(default_factory=list)


class EligibilityModel(RuleBasedStateMachine):
    """Random crashes, power losses, damage and ISR changes; every election is checked against
    the ground truth: an unsafe replica never leads while a safe one exists. Commits happen
    whenever the leader's rule allows one (see ``_observe``)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = MetadataState()
        self.incarnations = dict.fromkeys(BROKERS, 1)
        for b in BROKERS:
            run(self.state, RegisterBroker(b, f"h:{b}", 1))
            run(self.state, UnfenceBroker(b, 1))
        self.truth: dict[tuple[str, int], _Truth] = {}

    def _observe(self) -> None:
        for key, record in self.state.partitions.items():
            truth = self.truth[key]
            if record.leader_epoch == truth.leader_epoch:
                continue
            truth.leader_epoch = record.leader_epoch
            truth.leader = record.leader
            if record.leader == NO_LEADER:
                continue
            if record.leader in truth.safe:
                continue
            if truth.safe and not truth.unclean:
                truth.losses.append(
                    f"{key}: elected {record.leader} at epoch {record.leader_epoch}, "
                    f"but {sorted(truth.safe)} hold every committed record"
                )
            truth.safe = {record.leader}  # what it holds is the new truth
        # between commands the leader may advance its HW whenever its ISR is at min ISR (the
        # leader's rule): assume it did, the hardest history for the rules
        for key, record in self.state.partitions.items():
            topic = self.state.topics[key[0]]
            if record.leader != NO_LEADER and len(record.isr) >= topic.min_insync_replicas:
                self.truth[key].safe &= set(record.isr)

    @rule(
        partitions=st.integers(1, 3),
        rf=st.integers(1, 3),
        min_isr=st.integers(1, 3),
        unclean=st.booleans(),
    )
    def create_topic(self, partitions: int, rf: int, min_isr: int, unclean: bool) -> None:
        if "t" in self.state.topics or min_isr > rf:
            return
        live = {b.broker_id: None for b in self.state.brokers.values() if not b.fenced}
        if len(live) < rf:
            return
        assignment = assign_replicas(live, partitions, rf)
        configs = (
            ("min.insync.replicas", str(min_isr)),
            ("unclean.leader.election.enable", "true" if unclean else "false"),
        )
        assert run(self.state, CreateTopic("t", tuple(assignment), configs))["ok"]
        for p, replicas in enumerate(assignment):
            self.truth[("t", p)] = _Truth(set(replicas), unclean)
        self._observe()

    @rule(broker=st.sampled_from(BROKERS))
    def crash(self, broker: int) -> None:
        run(self.state, FenceBroker(broker, self.incarnations[broker]))
        self._observe()

    @rule(broker=st.sampled_from(BROKERS), power_loss=st.booleans())
    def restart(self, broker: int, power_loss: bool) -> None:
        self.incarnations[broker] += 1
        if power_loss:
            for key, truth in self.truth.items():
                if broker in self.state.partitions[key].replicas:
                    truth.safe.discard(broker)
        run(
            self.state,
            RegisterBroker(broker, f"h:{broker}", self.incarnations[broker], None, power_loss),
        )
        self._observe()

    @rule(broker=st.sampled_from(BROKERS))
    def heartbeat(self, broker: int) -> None:
        run(self.state, UnfenceBroker(broker, self.incarnations[broker]))
        self._observe()

    @rule(data=st.data())
    def damage(self, data: st.DataObject) -> None:
        if not self.truth:
            return
        key = data.draw(st.sampled_from(sorted(self.truth)))
        broker = data.draw(st.sampled_from(self.state.partitions[key].replicas))
        self.truth[key].safe.discard(broker)
        run(self.state, ReplicasDamaged(broker, self.incarnations[broker], (key,)))
        self._observe()

    @rule(data=st.data())
    def alter_isr(self, data: st.DataObject) -> None:
        """The leader shrinks the ISR, or adds followers that fetched all it has."""
        if not self.truth:
            return
        key = data.draw(st.sampled_from(sorted(self.truth)))
        record = self.state.partitions[key]
        if record.leader == NO_LEADER:
            return
        others = data.draw(st.lists(st.sampled_from(record.replicas), unique=True, max_size=3))
        isr = tuple(b for b in record.replicas if b == record.leader or b in others)
        result = run(
            self.state,
            AlterPartition(
                key[0], key[1], record.leader, record.leader_epoch, record.partition_epoch, isr
            ),
        )
        truth = self.truth[key]
        if result.get("ok") and record.leader in truth.safe:
            truth.safe |= set(isr) - set(record.isr)  # they caught up from a safe leader
        self._observe()

    @rule(data=st.data())
    def move_leader(self, data: st.DataObject) -> None:
        """The controller moves a starved leader's partition to another member (issue 21):
        any leader and ISR drawn from the replicas; the state machine must refuse every move
        that could elect or admit a replica missing committed records."""
        if not self.truth:
            return
        key = data.draw(st.sampled_from(sorted(self.truth)))
        record = self.state.partitions[key]
        isr = data.draw(st.lists(st.sampled_from(record.replicas), unique=True, min_size=1))
        leader = data.draw(st.sampled_from(isr))
        epoch = record.leader_epoch - data.draw(st.sampled_from((0, 0, 1)))
        run(self.state, MoveLeader(key[0], key[1], epoch, leader, tuple(isr)))
        self._observe()

    @rule()
    def elect(self) -> None:
        run(self.state, ElectLeader(tuple(sorted(self.truth))))
        self._observe()

    @invariant()
    def nothing_committed_is_lost(self) -> None:
        for truth in self.truth.values():
            assert not truth.losses, truth.losses
        assert list(self.state.violations()) == []


TestEligibilityModel = EligibilityModel.TestCase
TestEligibilityModel.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
