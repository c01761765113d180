"""The metadata state machine: one scenario per rule, and a hypothesis test of the invariants."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import cbor2
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftlog.proto.codes import ErrorCode
from raftlog.raft import metadata
from raftlog.raft.acl import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType
from raftlog.raft.assignment import assign_replicas
from raftlog.raft.commands import (
    AddPartitions,
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfig,
    Command,
    CreateAcls,
    CreateTopic,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeader,
    FenceBroker,
    ReassignPartitions,
    RegisterBroker,
    UnfenceBroker,
    UpsertScramCredential,
    decode_command,
    encode_command,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord
from raftlog.raft.metadata_snapshot import decode_partition_rows
from raftlog.raft.scram import ScramCredential, make_credential, verify_password


def run(state: MetadataState, command: Command) -> dict[str, Any]:
    """Apply through the wire encoding, as the quorum does."""
    return state.apply(encode_command(command)).result


def cluster(brokers: int = 3) -> MetadataState:
    state = MetadataState()
    for b in range(1, brokers + 1):
        assert run(state, RegisterBroker(b, f"127.0.0.1:{9000 + b}", incarnation=100 + b))["ok"]
        assert run(state, UnfenceBroker(b, 100 + b))["ok"]
    return state


def create(state: MetadataState, name: str, *assignment: tuple[int, ...], **configs: str) -> None:
    result = run(
        state,
        CreateTopic(
            name, tuple(assignment), tuple((k.replace("_", "."), v) for k, v in configs.items())
        ),
    )
    assert result.get("ok"), result


def part(state: MetadataState, name: str = "t", p: int = 0) -> PartitionRecord:
    return state.partitions[(name, p)]


def test_commands_round_trip_and_garbage_is_refused_not_raised() -> None:
    command = AlterPartition("t", 0, 1, 3, 7, (1, 2))
    assert decode_command(encode_command(command)) == command
    state = MetadataState()
    for garbage in (b"", b"\x00\xff", cbor2.dumps([1]), cbor2.dumps({"v": 2, "t": "x"})):
        result = state.apply(garbage).result
        assert result["error"] == ErrorCode.INVALID_REQUEST
    assert run(state, RegisterBroker(1, "a:1", 5))["ok"]
    assert state.apply(cbor2.dumps({"v": 1, "t": "fence_broker"})).result["error"] == (
        ErrorCode.INVALID_REQUEST
    )


def test_registration_starts_fenced_and_unfencing_needs_the_same_incarnation() -> None:
    state = MetadataState()
    result = run(state, RegisterBroker(1, "h:1", incarnation=7))
    assert result["fenced"] is True and state.brokers[1].fenced
    assert run(state, UnfenceBroker(1, 8))["error"] == ErrorCode.STALE_BROKER_EPOCH
    assert run(state, UnfenceBroker(1, 7))["changed"] is True
    assert not state.brokers[1].fenced
    # the same registration again is idempotent
    assert run(state, RegisterBroker(1, "h:1", incarnation=7))["fenced"] is False


def test_create_topic_validates_and_starts_with_all_replicas_in_sync() -> None:
    state = cluster(3)
    assert (
        run(state, CreateTopic("bad name", ((1,),)))["error"] == ErrorCode.INVALID_TOPIC_EXCEPTION
    )
    assert run(state, CreateTopic("t", ()))["error"] == ErrorCode.INVALID_PARTITIONS
    assert run(state, CreateTopic("t", ((1, 1),)))["error"] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert run(state, CreateTopic("t", ((1, 9),)))["error"] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert (
        run(state, CreateTopic("t", ((1, 2), (1,))))["error"]
        == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    )
    bad_config = CreateTopic("t", ((1, 2),), (("min.insync.replicas", "3"),))
    assert run(state, bad_config)["error"] == ErrorCode.INVALID_CONFIG
    assert (
        run(state, CreateTopic("t", ((1,),), (("nope", "1"),)))["error"] == ErrorCode.INVALID_CONFIG
    )
    assert not state.topics and not state.partitions  # refused commands change nothing
    create(state, "t", (2, 3, 1), (3, 1, 2), min_insync_replicas="2")
    assert part(state).leader == 2 and part(state).isr == (2, 3, 1)
    assert part(state, p=1).leader == 3
    assert state.topics["t"].min_insync_replicas == 2
    assert run(state, CreateTopic("t", ((1,),)))["error"] == ErrorCode.TOPIC_ALREADY_EXISTS


def test_fencing_the_leader_elects_from_the_isr_in_one_command() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    before = part(state)
    applied = state.apply(encode_command(FenceBroker(1, 101)))
    after = part(state)
    assert applied.partitions == {("t", 0)}
    assert after.leader == 2 and after.isr == (2, 3)
    assert after.leader_epoch == before.leader_epoch + 1
    assert (applied.elections, applied.unclean_elections) == (1, 0)  # the /metrics counters
    assert after.partition_epoch == before.partition_epoch + 1


def test_fencing_a_follower_shrinks_the_isr_without_a_new_leader_epoch() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    shrink = state.apply(encode_command(FenceBroker(3, 103)))
    assert part(state).isr == (1, 2) and part(state).leader_epoch == 0
    assert shrink.elections == 0
    assert part(state).partition_epoch == 1


def test_no_live_isr_member_means_offline_and_the_last_member_stays_in_the_isr() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    run(state, FenceBroker(2, 102))
    run(state, FenceBroker(3, 103))
    assert part(state).isr == (1,)
    run(state, FenceBroker(1, 101))
    offline = part(state)
    assert offline.leader == NO_LEADER and offline.isr == (1,)  # KIP-841: keep the last member
    # an out-of-sync replica coming back does not lead (no unclean election)
    run(state, UnfenceBroker(3, 103))
    assert part(state).leader == NO_LEADER
    assert run(state, ElectLeader((("t", 0),)))["partitions"] == [
        ["t", 0, ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE]
    ]
    # the last in-sync replica coming back leads again, with a new epoch
    run(state, UnfenceBroker(1, 101))
    back = part(state)
    assert back.leader == 1 and back.leader_epoch == offline.leader_epoch + 1


def test_unclean_election_only_when_the_topic_allows_it() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), unclean_leader_election_enable="true")
    run(state, FenceBroker(2, 102))
    run(state, FenceBroker(3, 103))
    offline = state.apply(encode_command(FenceBroker(1, 101)))
    assert (offline.elections, offline.unclean_elections) == (0, 0)  # no leader is no election
    unclean = state.apply(encode_command(UnfenceBroker(3, 103)))
    assert part(state).leader == 3 and part(state).isr == (3,)
    assert (unclean.elections, unclean.unclean_elections) == (1, 1)


def test_alter_partition_is_compare_and_set() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    p = part(state)
    shrink = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2))
    assert run(state, shrink)["partition_epoch"] == p.partition_epoch + 1
    assert part(state).isr == (1, 2)
    # the same request again is stale now
    assert run(state, shrink)["error"] == ErrorCode.INVALID_UPDATE_VERSION
    p = part(state)
    cases = [
        (
            AlterPartition("t", 0, 2, p.leader_epoch, p.partition_epoch, (1, 2)),
            ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ),
        (
            AlterPartition("t", 0, 1, p.leader_epoch - 1, p.partition_epoch, (1,)),
            ErrorCode.FENCED_LEADER_EPOCH,
        ),
        (
            AlterPartition("t", 0, 1, p.leader_epoch + 1, p.partition_epoch, (1,)),
            ErrorCode.UNKNOWN_LEADER_EPOCH,
        ),
        (
            AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (2, 3)),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 4)),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 1)),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            AlterPartition("t", 9, 1, p.leader_epoch, p.partition_epoch, (1,)),
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ),
    ]
    for command, code in cases:
        assert run(state, command)["error"] is code, command
    assert part(state) == p
    # a fenced broker cannot be added back
    run(state, FenceBroker(3, 103))
    p = part(state)
    grow = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2, 3))
    assert run(state, grow)["error"] == ErrorCode.INELIGIBLE_REPLICA
    run(state, UnfenceBroker(3, 103))
    p = part(state)
    grow = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (3, 1, 2))
    assert run(state, grow)["isr"] == [1, 2, 3]  # kept in replica order


def test_a_broker_that_restarted_since_the_leader_saw_it_fetch_is_not_added() -> None:
    """KIP-903: the leader vouches for the incarnation whose fetches it counted; a broker that
    has restarted since (after a power loss it may hold less) must fetch again first."""
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    p = part(state)
    run(state, AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2)))
    run(state, RegisterBroker(3, "127.0.0.1:9003", incarnation=203))
    run(state, UnfenceBroker(3, 203))
    p = part(state)
    stale = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2, 3), (-1, 102, 103))
    refused = run(state, stale)
    assert (
        refused["error"] == ErrorCode.INELIGIBLE_REPLICA and "(3, 103, 203)" in refused["message"]
    )
    assert part(state) == p
    odd = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2, 3), (203,))
    assert run(state, odd)["error"] == ErrorCode.INVALID_REQUEST
    # members already in the ISR are not checked (the controller handles their restarts)
    fresh = AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (1, 2, 3), (-1, 7, 203))
    assert run(state, fresh)["isr"] == [1, 2, 3]


def test_a_new_incarnation_loses_the_old_ones_roles_and_waits_to_be_unfenced() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    result = run(state, RegisterBroker(1, "127.0.0.1:9001", incarnation=999))
    assert result["fenced"] is True
    assert part(state).leader == 2 and 1 not in part(state).isr
    assert run(state, FenceBroker(1, 101))["error"] == ErrorCode.STALE_BROKER_EPOCH


def test_preferred_election_moves_leadership_back() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    run(state, FenceBroker(1, 101))
    run(state, UnfenceBroker(1, 101))
    assert part(state).leader == 2  # the returning broker is not in the ISR yet
    assert run(state, ElectLeader((("t", 0),), preferred=True))["partitions"] == [
        ["t", 0, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE]
    ]
    p = part(state)
    run(state, AlterPartition("t", 0, 2, p.leader_epoch, p.partition_epoch, (1, 2, 3)))
    run(state, ElectLeader((("t", 0),), preferred=True))
    assert part(state).leader == 1


def test_delete_and_recreate_never_reuses_epochs_or_topic_ids() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3))
    run(state, FenceBroker(1, 101))
    old = part(state)
    applied = state.apply(encode_command(DeleteTopic("t")))
    assert applied.deleted == {("t", 0)} and not state.partitions
    assert run(state, DeleteTopic("t"))["error"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    create(state, "t", (2, 3))
    new = part(state)
    assert new.topic_id > old.topic_id
    assert new.leader_epoch > old.leader_epoch and new.partition_epoch > old.partition_epoch


def test_alter_config_validates_against_the_replication_factor() -> None:
    state = cluster(3)
    create(state, "t", (1, 2))
    assert run(state, AlterTopicConfig("t", (("min.insync.replicas", "3"),)))["error"] == (
        ErrorCode.INVALID_CONFIG
    )
    assert run(state, AlterTopicConfig("t", (("retention.ms", "1000"),)))["ok"]
    assert state.topics["t"].config("retention.ms") == "1000"
    assert run(state, AlterTopicConfig("t", delete_configs=("retention.ms",)))["ok"]
    assert state.topics["t"].config("retention.ms") == "604800000"
    assert run(state, AlterTopicConfig("x", ()))["error"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_producer_id_blocks_never_overlap() -> None:
    state = cluster(2)
    a = run(state, AllocateProducerIds(1, 1000))
    b = run(state, AllocateProducerIds(2, 10))
    assert (a["start"], b["start"]) == (0, 1000)
    assert run(state, AllocateProducerIds(9, 10))["error"] == ErrorCode.BROKER_NOT_AVAILABLE
    assert run(state, AllocateProducerIds(1, 0))["error"] == ErrorCode.INVALID_REQUEST


def test_snapshot_round_trip_keeps_everything() -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), (2, 3, 1), min_insync_replicas="2")
    run(state, FenceBroker(2, 102))
    run(state, DeleteTopic("t"))
    create(state, "u", (1, 3))
    run(state, AllocateProducerIds(1, 50))
    copy = MetadataState.from_snapshot(state.snapshot())
    assert copy.snapshot() == state.snapshot()
    # and it goes on identically
    for s in (state, copy):
        run(s, FenceBroker(1, 101))
    assert copy.snapshot() == state.snapshot()
    assert list(copy.replicas_of(3)) == list(state.replicas_of(3))


# ---- the invariants under any command sequence ------------------------------------------------

BROKERS = (1, 2, 3, 4, 5)


class MetadataMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = MetadataState()
        self.incarnations = dict.fromkeys(BROKERS, 0)
        self.seen_epochs: dict[tuple[str, int, int], tuple[int, int]] = {}
        # (topic id, partition, leader epoch) → the leader that held it
        self.epoch_leaders: dict[tuple[int, int, int], int] = {}
        self.high_epochs: dict[tuple[str, int], tuple[int, int]] = {}

    @rule(broker=st.sampled_from(BROKERS), new=st.booleans())
    def register(self, broker: int, new: bool) -> None:
        if new:
            self.incarnations[broker] += 1
        run(self.state, RegisterBroker(broker, f"h:{broker}", self.incarnations[broker]))

    @rule(broker=st.sampled_from(BROKERS), fence=st.booleans())
    def fence_or_unfence(self, broker: int, fence: bool) -> None:
        cls = FenceBroker if fence else UnfenceBroker
        run(self.state, cls(broker, self.incarnations[broker]))

    @rule(
        name=st.sampled_from(["a", "b", "c"]),
        partitions=st.integers(1, 4),
        rf=st.integers(1, 3),
        unclean=st.booleans(),
    )
    def create_topic(self, name: str, partitions: int, rf: int, unclean: bool) -> None:
        live = {b.broker_id: None for b in self.state.brokers.values() if not b.fenced}
        if len(live) < rf:
            return
        assignment = assign_replicas(live, partitions, rf)
        configs = (("unclean.leader.election.enable", "true" if unclean else "false"),)
        run(self.state, CreateTopic(name, tuple(assignment), configs))

    @rule(name=st.sampled_from(["a", "b", "c"]))
    def delete_topic(self, name: str) -> None:
        run(self.state, DeleteTopic(name))

    @rule(data=st.data())
    def alter_partition(self, data: st.DataObject) -> None:
        if not self.state.partitions:
            return
        key = data.draw(st.sampled_from(sorted(self.state.partitions)))
        p = self.state.partitions[key]
        isr = data.draw(st.lists(st.sampled_from(BROKERS), max_size=4, unique=True))
        stale = data.draw(st.integers(-1, 1))
        run(
            self.state,
            AlterPartition(
                key[0], key[1], p.leader, p.leader_epoch, p.partition_epoch + stale, tuple(isr)
            ),
        )

    @rule(data=st.data(), preferred=st.booleans())
    def elect(self, data: st.DataObject, preferred: bool) -> None:
        if not self.state.partitions:
            return
        key = data.draw(st.sampled_from(sorted(self.state.partitions)))
        run(self.state, ElectLeader((key,), preferred))

    @rule(data=st.data(), throttle=st.sampled_from([0, 1000]))
    def reassign(self, data: st.DataObject, throttle: int) -> None:
        if not self.state.partitions:
            return
        key = data.draw(st.sampled_from(sorted(self.state.partitions)))
        target = data.draw(st.lists(st.sampled_from(BROKERS), max_size=4, unique=True))
        run(self.state, ReassignPartitions(((key[0], key[1], tuple(target)),), throttle))

    @rule(name=st.sampled_from(["a", "b", "c"]), data=st.data())
    def add_partitions(self, name: str, data: st.DataObject) -> None:
        replicas = data.draw(
            st.lists(st.sampled_from(BROKERS), min_size=1, max_size=3, unique=True)
        )
        run(self.state, AddPartitions(name, (tuple(replicas),)))

    @rule()
    def snapshot_restore(self) -> None:
        self.state = MetadataState.from_snapshot(self.state.snapshot())

    @invariant()
    def rules_hold(self) -> None:
        assert list(self.state.violations()) == []
        recount: dict[int, int] = {}
        for p in self.state.partitions.values():
            recount[p.replicas[0]] = recount.get(p.replicas[0], 0) + 1
        kept = {b: n for b, n in self.state.leader_counts().items() if n}
        assert kept == recount  # the maintained counts match a recount
        for b in BROKERS:  # so does the by-broker index
            assert {p.key for p in self.state.replicas_of(b)} == {
                key for key, p in self.state.partitions.items() if b in p.replicas
            }
            # ... and the role lookups
            assert set(self.state.roles_of(b)) == {
                key for key, p in self.state.partitions.items() if b == p.leader or b in p.isr
            }
            assert self.state.led_by(b) == sorted(
                key for key, p in self.state.partitions.items() if b == p.leader
            )
        assert self.state.leaderless() == sorted(
            key for key, p in self.state.partitions.items() if p.leader == NO_LEADER
        )
        assert self.state.offline() == sorted(
            key
            for key, p in self.state.partitions.items()
            if p.leader == NO_LEADER or not self.state.is_live(p.leader)
        )
        assert self.state.displaced() == sorted(
            key
            for key, p in self.state.partitions.items()
            if p.leader not in (NO_LEADER, p.replicas[0])
        )
        for name, topic in self.state.topics.items():
            assert sorted(p for t, p in self.state.partitions if t == name) == list(
                range(topic.partitions)
            )
        for key, p in self.state.partitions.items():
            # epochs never decrease (also across delete + re-create)
            epochs = (p.leader_epoch, p.partition_epoch)
            assert epochs >= self.high_epochs.get(key, (-1, -1)), (key, epochs)
            self.high_epochs[key] = epochs
            # never two leaders for one (partition, leader epoch)
            if p.leader != NO_LEADER:
                holder = self.epoch_leaders.setdefault(
                    (p.topic_id, p.partition, p.leader_epoch), p.leader
                )
                assert holder == p.leader, (key, p.leader_epoch, holder, p.leader)
            # a fenced broker leads nothing
            if p.leader != NO_LEADER:
                assert not self.state.brokers[p.leader].fenced


TestMetadataInvariants = MetadataMachine.TestCase
TestMetadataInvariants.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("brokers", [3, 5])
def test_many_partitions_fence_and_unfence_stay_consistent(brokers: int) -> None:
    state = cluster(brokers)
    live = dict.fromkeys(range(1, brokers + 1))
    run(state, CreateTopic("big", tuple(assign_replicas(live, 300, 3))))
    for b in range(1, brokers + 1):
        run(state, FenceBroker(b, 100 + b))
        assert list(state.violations()) == []
        run(state, UnfenceBroker(b, 100 + b))
    assert all(p.leader != NO_LEADER for p in state.partitions.values())


# ---- ACLs and SCRAM users (rule 8) -----------------------------------------------------------

ALICE_READS = AclBinding(
    "User:alice",
    ResourceType.TOPIC,
    PatternType.LITERAL,
    "orders",
    Operation.READ,
    Permission.ALLOW,
)
EVERYONE_DESCRIBES = AclBinding(
    "User:*", ResourceType.TOPIC, PatternType.PREFIXED, "ord", Operation.DESCRIBE, Permission.ALLOW
)
BOB_DENIED = AclBinding(
    "User:bob", ResourceType.GROUP, PatternType.LITERAL, "*", Operation.ALL, Permission.DENY
)


def credential(password: str = "pw", iterations: int = 4096) -> ScramCredential:
    return make_credential(password, iterations=iterations, salt=b"0123456789abcdef")


def test_create_acls_stores_valid_bindings_once_and_the_index_follows() -> None:
    state = MetadataState()
    assert not state.acl_index().authorize(
        "User:alice", Operation.READ, ResourceType.TOPIC, "orders"
    )
    applied = state.apply(encode_command(CreateAcls((ALICE_READS, EVERYONE_DESCRIBES))))
    assert applied.result == {"ok": True, "created": 2}
    assert applied.acls_changed and not applied.users
    assert state.acls == {ALICE_READS, EVERYONE_DESCRIBES}
    index = state.acl_index()
    assert index.authorize("User:alice", Operation.READ, ResourceType.TOPIC, "orders")
    assert index.authorize("User:carol", Operation.DESCRIBE, ResourceType.TOPIC, "orders")
    assert state.acl_index() is index  # cached until the bindings change
    # again: nothing new, nothing changed
    applied = state.apply(encode_command(CreateAcls((ALICE_READS,))))
    assert applied.result["created"] == 0 and not applied.acls_changed
    assert state.acl_index() is index


def test_create_acls_is_all_or_nothing() -> None:
    state = MetadataState()
    bad = replace(ALICE_READS, operation=Operation.IDEMPOTENT_WRITE)
    applied = state.apply(encode_command(CreateAcls((EVERYONE_DESCRIBES, bad))))
    assert applied.result["error"] == ErrorCode.INVALID_REQUEST
    assert (
        "binding 1" in applied.result["message"] and "idempotent_write" in applied.result["message"]
    )
    assert state.acls == set() and not applied.acls_changed


def test_delete_acls_removes_what_any_filter_matches_and_lists_it() -> None:
    state = MetadataState()
    run(state, CreateAcls((ALICE_READS, EVERYONE_DESCRIBES, BOB_DENIED)))
    index = state.acl_index()
    applied = state.apply(
        encode_command(
            DeleteAcls(
                (AclFilter(principal="User:alice"), AclFilter(resource_type=ResourceType.GROUP))
            )
        )
    )
    assert applied.result["ok"] and applied.acls_changed
    assert applied.result["deleted"] == [ALICE_READS.to_dict(), BOB_DENIED.to_dict()]  # sorted
    assert state.acls == {EVERYONE_DESCRIBES}
    assert state.acl_index() is not index
    assert not state.acl_index().authorize(
        "User:alice", Operation.READ, ResourceType.TOPIC, "orders"
    )
    # a filter that matches nothing is not an error; no filter deletes nothing
    assert run(state, DeleteAcls((AclFilter(principal="User:zed"),))) == {"ok": True, "deleted": []}
    assert run(state, DeleteAcls(())) == {"ok": True, "deleted": []}
    assert run(state, DeleteAcls((AclFilter(),)))["deleted"] == [EVERYONE_DESCRIBES.to_dict()]


def test_acl_and_user_counts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "ACL_BINDINGS_MAX", 2)
    monkeypatch.setattr(metadata, "SCRAM_USERS_MAX", 1)
    monkeypatch.setattr(metadata, "ACL_FILTERS_PER_COMMAND_MAX", 2)
    state = MetadataState()
    assert run(state, CreateAcls((ALICE_READS, EVERYONE_DESCRIBES)))["created"] == 2
    assert run(state, CreateAcls((ALICE_READS,)))["created"] == 0  # present: not more
    assert run(state, CreateAcls((BOB_DENIED,)))["error"] == ErrorCode.POLICY_VIOLATION
    assert run(state, CreateAcls((ALICE_READS,) * 3))["error"] == ErrorCode.POLICY_VIOLATION
    assert run(state, DeleteAcls((AclFilter(),) * 3))["error"] == ErrorCode.INVALID_REQUEST
    assert run(state, UpsertScramCredential("alice", credential()))["created"] is True
    assert run(state, UpsertScramCredential("alice", credential("new")))["created"] is False
    assert (
        run(state, UpsertScramCredential("bob", credential()))["error"]
        == ErrorCode.POLICY_VIOLATION
    )
    assert set(state.users) == {"alice"} and len(state.acls) == 2


def test_scram_credentials_are_set_replaced_and_deleted() -> None:
    state = MetadataState()
    applied = state.apply(encode_command(UpsertScramCredential("alice", credential("one"))))
    assert applied.result == {"ok": True, "created": True}
    assert applied.users == frozenset({"alice"}) and not applied.acls_changed
    assert verify_password(state.users["alice"], "one")
    run(state, UpsertScramCredential("alice", credential("two")))
    assert verify_password(state.users["alice"], "two")
    applied = state.apply(encode_command(DeleteScramCredential("alice")))
    assert applied.result == {"ok": True} and applied.users == frozenset({"alice"})
    assert state.users == {}
    assert run(state, DeleteScramCredential("alice"))["error"] == ErrorCode.RESOURCE_NOT_FOUND


@pytest.mark.parametrize(
    "command",
    [
        UpsertScramCredential("", credential()),
        UpsertScramCredential("a:b", credential()),
        UpsertScramCredential("alice", replace(credential(), iterations=1000)),
        UpsertScramCredential("alice", replace(credential(), stored_key=b"short")),
        DeleteScramCredential("*"),
    ],
)
def test_bad_users_and_credentials_are_invalid_requests(command: Command) -> None:
    state = MetadataState()
    assert run(state, command)["error"] == ErrorCode.INVALID_REQUEST
    assert state.users == {}


def test_acl_and_scram_commands_round_trip() -> None:
    for command in (
        CreateAcls((ALICE_READS, BOB_DENIED)),
        DeleteAcls((AclFilter(principal="User:bob", operation=Operation.ALL), AclFilter())),
        UpsertScramCredential("alice", credential()),
        DeleteScramCredential("alice"),
    ):
        assert decode_command(encode_command(command)) == command


def _raw(t: str, **fields: Any) -> bytes:
    return bytes(cbor2.dumps({"v": 1, "t": t, **fields}))


@pytest.mark.parametrize(
    "data",
    [
        _raw("create_acls"),
        _raw("create_acls", bindings={"principal": "User:a"}),
        _raw("create_acls", bindings=["User:a"]),
        _raw("create_acls", bindings=[{**ALICE_READS.to_dict(), "operation": "fly"}]),
        _raw("create_acls", bindings=[{**ALICE_READS.to_dict(), "principal": 7}]),
        _raw(
            "create_acls",
            bindings=[{k: v for k, v in ALICE_READS.to_dict().items() if k != "operation"}],
        ),
        _raw("delete_acls", filters=[{"colour": "red"}]),
        _raw("delete_acls", filters=None),
        _raw("upsert_scram_credential", user="alice", credential={"salt": b"x"}),
        _raw("upsert_scram_credential", user="alice", credential=[1, 2, 3]),
        _raw("upsert_scram_credential", user=["alice"], credential=credential().to_dict()),
        _raw("upsert_scram_credential", user="alice"),
        _raw("delete_scram_credential", user={"a": 1}),
        _raw("delete_scram_credential", user=None),
    ],
)
def test_malformed_acl_and_scram_commands_are_refused_not_raised(data: bytes) -> None:
    state = MetadataState()
    applied = state.apply(data)
    assert applied.result["error"] == ErrorCode.INVALID_REQUEST, applied.result
    assert state.acls == set() and state.users == {}
    assert state.version == 1


def _secured() -> MetadataState:
    state = cluster(3)
    create(state, "orders", (1, 2, 3))
    run(state, CreateAcls((EVERYONE_DESCRIBES, BOB_DENIED, ALICE_READS)))
    run(state, UpsertScramCredential("bob", credential("b")))
    run(state, UpsertScramCredential("alice", credential("a", iterations=8192)))
    return state


def test_snapshot_v3_keeps_acls_and_users_and_is_the_same_bytes_whatever_the_order() -> None:
    state = _secured()
    data = state.snapshot()
    assert cbor2.loads(data)["v"] == 3
    copy = MetadataState.from_snapshot(data)
    assert copy.acls == state.acls and copy.users == state.users
    assert copy.snapshot() == data
    assert copy.acl_index().authorize("User:alice", Operation.READ, ResourceType.TOPIC, "orders")
    assert verify_password(copy.users["alice"], "a")
    # the same bindings and users added in another order give the same bytes
    other = cluster(3)
    create(other, "orders", (1, 2, 3))
    for binding in (ALICE_READS, BOB_DENIED, EVERYONE_DESCRIBES):
        run(other, CreateAcls((binding,)))
    run(other, UpsertScramCredential("alice", credential("a", iterations=8192)))
    run(other, UpsertScramCredential("bob", credential("b")))
    other.version = state.version
    assert other.snapshot() == data
    assert list(copy.violations()) == []


@pytest.mark.parametrize("old_version", [1, 2])
def test_snapshots_of_versions_1_and_2_read_with_no_acls_or_users(old_version: int) -> None:
    state = cluster(3)
    create(state, "t", (1, 2, 3), (2, 3, 1))
    body = cbor2.loads(state.snapshot())
    body["v"] = old_version
    del body["acls"], body["users"]
    if old_version == 1:  # version 1 partitions had no elr and last_known_elr
        body["partitions"] = [p[:8] for p in body["partitions"]]
    old = MetadataState.from_snapshot(cbor2.dumps(body))
    assert old.acls == set() and old.users == {}
    assert old.partitions == state.partitions and old.brokers == state.brokers
    assert old.snapshot() == state.snapshot()  # and it is written as version 3
    assert not old.acl_index().authorize("User:a", Operation.READ, ResourceType.TOPIC, "t")


def test_a_snapshot_of_an_unknown_version_is_refused() -> None:
    body = cbor2.loads(MetadataState().snapshot())
    body["v"] = 4
    with pytest.raises(ValueError, match="version 1 to 3"):
        MetadataState.from_snapshot(cbor2.dumps(body))


def test_violations_name_bad_bindings_and_users() -> None:
    state = _secured()
    assert list(state.violations()) == []
    state.acls.add(replace(ALICE_READS, principal="alice"))
    state.users["a:b"] = credential()
    found = list(state.violations())
    assert len(found) == 2 and "ACL binding" in found[0] and "SCRAM user 'a:b'" in found[1]


def test_a_brokers_partition_states_round_trip_and_garbage_is_refused() -> None:
    """PartitionStates (issue 21): the controller sends a relayed broker its partitions'
    committed state, in the snapshot's rows."""
    state = cluster(4)
    create(state, "t", (1, 2, 3), (2, 3, 4), (3, 4, 1))
    assert decode_partition_rows(state.encode_replicas_of(4)) == [
        state.partitions[("t", 1)],
        state.partitions[("t", 2)],
    ]
    assert decode_partition_rows(state.encode_replicas_of(9)) == []
    for garbage in (b"", b"\xff", cbor2.dumps({"a": 1}), cbor2.dumps([[1, 2]])):
        with pytest.raises(ValueError):
            decode_partition_rows(garbage)


def test_a_brokers_kafka_address_is_registered_snapshotted_and_read_from_older_snapshots() -> None:
    state = MetadataState()
    assert run(state, RegisterBroker(1, "h:9092", 7, kafka_address="h:9094"))["ok"]
    # the same incarnation cannot move its Kafka listener
    again = run(state, RegisterBroker(1, "h:9092", 7, kafka_address="h:9999"))
    assert again["error"] == ErrorCode.INVALID_REQUEST
    copy = MetadataState.from_snapshot(state.snapshot())
    assert copy.brokers[1].kafka_address == "h:9094"
    # a snapshot written before the Kafka listener has 7 broker columns: no Kafka address
    body = cbor2.loads(state.snapshot())
    body["brokers"] = [row[:7] for row in body["brokers"]]
    older = MetadataState.from_snapshot(cbor2.dumps(body))
    assert older.brokers[1].kafka_address is None
    assert older.brokers[1].address == "h:9092"


# ---- reassignment (KIP-455) and added partitions -------------------------------------------


def reassign(state: MetadataState, target: tuple[int, ...], **kw: Any) -> list[Any]:
    result = run(state, ReassignPartitions((("t", 0, target),), **kw))
    return list(result["partitions"][0][2:])


def test_a_reassignment_adds_then_removes_when_the_targets_are_in_sync() -> None:
    state = cluster(6)
    create(state, "t", (1, 2, 3))
    before = part(state)
    assert reassign(state, (4, 5, 6), throttle=1000) == [ErrorCode.NONE, ""]
    moving = part(state)
    assert moving.replicas == (4, 5, 6, 1, 2, 3)  # the target first, then the leaving ones
    assert (moving.adding, moving.removing, moving.throttle) == ((4, 5, 6), (1, 2, 3), 1000)
    assert moving.isr == (1, 2, 3) and moving.leader == 1  # nothing else changes yet
    assert moving.partition_epoch == before.partition_epoch + 1
    assert moving.leader_epoch == before.leader_epoch
    assert {p.key for p in state.replicas_of(5)} == {("t", 0)}
    # the leader adds caught-up targets; the last one in completes the move in that command
    epoch = moving.partition_epoch
    result = run(state, AlterPartition("t", 0, 1, moving.leader_epoch, epoch, (4, 5, 1, 2, 3)))
    assert result["ok"] and part(state).replicas == (4, 5, 6, 1, 2, 3)
    p = part(state)
    result = run(state, AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (*p.isr, 6)))
    done = part(state)
    assert done.replicas == (4, 5, 6) and done.isr == (4, 5, 6)
    assert (done.adding, done.removing, done.throttle) == ((), (), 0)
    assert done.leader == 4 and done.leader_epoch == before.leader_epoch + 1  # moved off 1
    assert result["leader_epoch"] == done.leader_epoch  # the old leader learns it lost it
    assert {p.key for p in state.replicas_of(1)} == set()
    assert state.leader_counts().get(4) == 1 and not state.leader_counts().get(1)
    assert list(state.violations()) == []


def test_a_reassignment_within_the_isr_completes_at_once_and_a_cancel_goes_back() -> None:
    state = cluster(4)
    create(state, "t", (1, 2, 3))
    assert reassign(state, (2, 1)) == [ErrorCode.NONE, ""]  # shrink: 2 and 1 are in sync
    assert part(state).replicas == (2, 1) and not part(state).removing
    assert reassign(state, ()) == [ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, reassign_msg(state)]
    assert reassign(state, (2, 1, 4))[0] == ErrorCode.NONE
    assert part(state).adding == (4,)
    assert reassign(state, ())[0] == ErrorCode.NONE  # cancel: 4 leaves
    p = part(state)
    assert p.replicas == (2, 1) and not p.adding and p.isr == (2, 1)
    # bad targets are refused, per partition, changing nothing
    before = part(state)
    assert reassign(state, (1, 1))[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert reassign(state, (1, 9))[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    result = run(state, ReassignPartitions((("nope", 0, (1,)),)))
    assert result["partitions"][0][2] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert part(state) == before


def reassign_msg(state: MetadataState) -> str:
    return "t-0 is not being reassigned"


def test_cancelling_when_the_leader_is_a_replica_being_added_elects_an_original_one() -> None:
    state = cluster(5)
    create(state, "t", (1, 2, 3))
    reassign(state, (4, 5, 2))
    p = part(state)
    run(state, AlterPartition("t", 0, 1, p.leader_epoch, p.partition_epoch, (4, 2, 1, 3)))
    run(state, FenceBroker(1, 101))  # 1's leadership moves to the first live ISR member: 4
    p = part(state)
    assert p.leader == 4 and p.adding == (4, 5) and p.removing == (1, 3)
    assert reassign(state, ())[0] == ErrorCode.NONE
    p = part(state)
    # Kafka's revert: the replicas less the added ones, in their current order
    assert p.replicas == (2, 1, 3) and not p.adding and not p.removing
    assert p.leader == 2 and p.isr == (2, 3) and list(state.violations()) == []


def test_add_partitions_grows_a_topic_with_empty_in_sync_partitions() -> None:
    state = cluster(3)
    create(state, "t", (1, 2), (2, 3))
    result = run(state, AddPartitions("t", ((3, 1), (1, 2))))
    assert result["partitions"] == 4 and state.topics["t"].partitions == 4
    assert part(state, "t", 3).replicas == (1, 2) and part(state, "t", 3).leader == 1
    assert (
        run(state, AddPartitions("t", ((1, 1),)))["error"] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    )
    assert run(state, AddPartitions("t", ()))["error"] == ErrorCode.INVALID_PARTITIONS
    assert run(state, AddPartitions("x", ((1,),)))["error"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert state.topics["t"].partitions == 4


def test_a_reassignment_in_progress_survives_a_snapshot_and_partition_rows() -> None:
    state = cluster(6)
    create(state, "t", (1, 2, 3))
    reassign(state, (4, 5, 6), throttle=77)
    restored = MetadataState.from_snapshot(state.snapshot())
    assert part(restored) == part(state)
    assert decode_partition_rows(state.encode_replicas_of(4)) == [part(state)]
