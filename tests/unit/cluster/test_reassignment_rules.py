"""Reassignment on a broker, without sockets: the leader's followers follow the replica set, the
catch-up throttle, the drain plan and the plan file."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.client.partition_admin import PlanError, parse_plan
from raftlog.cluster.partition import stray_directories
from raftlog.cluster.replication import LeaderReplication
from raftlog.cluster.throttle import ByteRateLimit
from raftlog.raft.assignment import drain_plan
from raftlog.raft.metadata_records import PartitionRecord
from raftlog.segments.clock import MonoMs


def test_added_followers_join_the_isr_only_by_catching_up_and_removed_ones_are_forgotten() -> None:
    leader = LeaderReplication.start(1, (1, 2, 3), (1, 2, 3), 4, 7, 100, 100, 1000, MonoMs(0))
    leader.update_replicas((4, 1, 2, 3), MonoMs(10))
    assert set(leader.followers) == {2, 3, 4}
    for follower in (2, 3):
        leader.on_follower_fetch(follower, 100, 100, MonoMs(20))
    assert leader.check_isr(100, MonoMs(20)) is None  # 4 has fetched nothing
    leader.on_follower_fetch(4, 60, 100, MonoMs(30))
    assert leader.check_isr(100, MonoMs(30)) is None  # behind the high watermark
    leader.on_follower_fetch(4, 100, 100, MonoMs(40))
    proposal = leader.check_isr(100, MonoMs(40))
    assert proposal is not None and proposal.isr == (4, 1, 2, 3)
    # the move completes: 3 leaves the replicas and the ISR in one metadata change
    leader.update_replicas((4, 1, 2), MonoMs(50))
    assert 3 in leader.followers  # still in the committed ISR until that is applied
    leader.update_from_metadata((4, 1, 2), 9)
    assert leader.maximal_isr == (4, 1, 2)
    leader.on_follower_fetch(3, 100, 100, MonoMs(60))  # a late fetch of the removed one
    assert leader.check_isr(100, MonoMs(60)) is None  # is never proposed back
    leader.update_replicas((4, 1, 2), MonoMs(70))
    leader.update_replicas((4, 1), MonoMs(70))
    assert set(leader.followers) == {2, 4}  # 2 stays while it is in the ISR


def test_the_catch_up_throttle_allows_its_rate_with_one_second_of_burst() -> None:
    limit = ByteRateLimit.full(1000, 0)
    assert limit.allowance(0) == 1000
    limit.spend(2500)  # one big batch: into debt
    assert limit.allowance(1000) == 0
    assert limit.allowance(1500) == 0
    assert limit.allowance(2000) == 500
    assert limit.allowance(60_000) == 1000  # never more than one second's worth


def test_a_drain_moves_each_replica_to_the_least_loaded_broker_in_another_rack() -> None:
    lists = [("t", 0, (1, 2)), ("t", 1, (2, 3)), ("t", 2, (3, 4))]
    moves, stuck = drain_plan(lists, dict.fromkeys((1, 2, 3, 4)), 2, {1: 1, 2: 2, 3: 2, 4: 1})
    assert moves == [("t", 0, (1, 4)), ("t", 1, (3, 1))] and stuck == []
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "a"}
    moves, _ = drain_plan([("t", 0, (2, 3))], racks, 2, {4: 9})
    assert moves == [("t", 0, (3, 1))]  # rack a, like the drained one, not b again
    moves, stuck = drain_plan([("t", 0, (1, 2))], {1: None, 2: None}, 2, {})
    assert moves == [] and stuck == [("t", 0)]  # nobody can take it


def test_a_plan_is_kafka_reassign_partitions_json() -> None:
    plan = parse_plan(
        '{"version": 1, "partitions": [{"topic": "a", "partition": 0, "replicas": [4, 5]},'
        ' {"topic": "a", "partition": 1, "replicas": []}]}'
    )
    assert plan == {("a", 0): (4, 5), ("a", 1): ()}
    for bad in (
        "nope",
        "[]",
        '{"partitions": [{"topic": "a", "partition": "0", "replicas": [1]}]}',
        '{"partitions": [{"topic": "a", "partition": 0, "replicas": [true]}]}',
        '{"partitions": [{"topic": "a", "partition": 0, "replicas": [1]},'
        ' {"topic": "a", "partition": 0, "replicas": [2]}]}',
    ):
        with pytest.raises(PlanError):
            parse_plan(bad)


def test_stray_directories_are_the_partitions_assigned_elsewhere_only(tmp_path: Path) -> None:
    for name in ("t-0", "t-1", "my-topic-2", "gone-0", "not-a-partition", "x-y"):
        (tmp_path / name).mkdir()
    records = {
        ("t", 0): PartitionRecord("t", 0, 1, (1, 2), (1, 2), 1, 0, 0),
        ("t", 1): PartitionRecord("t", 1, 1, (2, 3), (2, 3), 2, 0, 0),
        ("my-topic", 2): PartitionRecord("my-topic", 2, 2, (3, 4), (3,), 3, 0, 0, adding=(4,)),
    }
    assert stray_directories(str(tmp_path), 1, records) == [
        (("my-topic", 2), str(tmp_path / "my-topic-2")),
        (("t", 1), str(tmp_path / "t-1")),
    ]  # gone-0: not in the metadata, so only a DeleteTopic may remove it
    assert stray_directories(str(tmp_path), 4, records) == [
        (("t", 0), str(tmp_path / "t-0")),
        (("t", 1), str(tmp_path / "t-1")),
    ]  # 4 is being added to my-topic-2: not a stray
