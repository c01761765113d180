"""The listener turns partition changes into replica events and never goes backwards."""

from __future__ import annotations

from dataclasses import replace

from raftlog.raft.listener import EventKind, PartitionListener
from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord

BASE = PartitionRecord("t", 0, 1, (1, 2, 3), (1, 2, 3), 1, 0, 0)


def kinds(listener: PartitionListener, *records: PartitionRecord) -> list[EventKind]:
    return [e.kind for e in listener.changed(records)]


def test_roles_follow_the_leader_and_epochs() -> None:
    one, two = PartitionListener(1), PartitionListener(2)
    assert kinds(one, BASE) == [EventKind.BECOME_LEADER]
    assert kinds(two, BASE) == [EventKind.BECOME_FOLLOWER]
    shrunk = replace(BASE, isr=(1, 2), partition_epoch=1)
    assert kinds(one, shrunk) == [EventKind.LEADER_UPDATE]
    assert kinds(two, shrunk) == [EventKind.FOLLOWER_UPDATE]
    assert kinds(one, shrunk) == []  # nothing new
    moved = replace(shrunk, leader=2, isr=(2,), leader_epoch=1, partition_epoch=2)
    assert kinds(one, moved) == [EventKind.BECOME_FOLLOWER]
    assert kinds(two, moved) == [EventKind.BECOME_LEADER]
    offline = replace(moved, leader=NO_LEADER, leader_epoch=2, partition_epoch=3)
    assert kinds(two, offline) == [EventKind.BECOME_FOLLOWER]


def test_a_regression_is_ignored_and_counted() -> None:
    listener = PartitionListener(1)
    newer = replace(BASE, leader=2, leader_epoch=3, partition_epoch=5)
    listener.changed([newer])
    assert kinds(listener, BASE) == []
    assert kinds(listener, replace(newer, partition_epoch=4)) == []
    assert listener.regressions_ignored == 2
    assert listener.known[("t", 0)] == newer


def test_a_recreated_topic_is_new_and_an_older_topic_id_is_a_regression() -> None:
    listener = PartitionListener(2)
    listener.changed([BASE])
    recreated = replace(BASE, topic_id=2, leader=2, leader_epoch=5, partition_epoch=5)
    assert kinds(listener, recreated) == [EventKind.BECOME_LEADER]
    assert kinds(listener, BASE) == []
    assert listener.regressions_ignored == 1


def test_deletion_only_for_replicas_we_hold_and_stop_when_reassigned_away() -> None:
    listener = PartitionListener(3)
    listener.changed([BASE, replace(BASE, partition=1, replicas=(1, 2), isr=(1, 2))])
    events = listener.deleted([("t", 0), ("t", 1), ("x", 0)])
    assert [(e.kind, e.key) for e in events] == [(EventKind.DELETE_REPLICA, ("t", 0))]
    listener.changed([BASE])
    away = replace(BASE, replicas=(1, 2), isr=(1, 2), partition_epoch=1)
    assert kinds(listener, away) == [EventKind.STOP_REPLICA]


def test_a_reassignment_starts_an_added_replica_and_stops_a_removed_one() -> None:
    four, three = PartitionListener(4), PartitionListener(3)
    assert kinds(four, BASE) == []  # not a replica: nothing to do, but the record is known
    kinds(three, BASE)
    moving = replace(BASE, replicas=(1, 2, 4, 3), adding=(4,), removing=(3,), partition_epoch=1)
    assert kinds(four, moving) == [EventKind.BECOME_FOLLOWER]  # a follower from the start
    assert kinds(three, moving) == [EventKind.FOLLOWER_UPDATE]
    done = replace(
        moving, replicas=(1, 2, 4), isr=(1, 2, 4), adding=(), removing=(), partition_epoch=2
    )
    assert kinds(three, done) == [EventKind.STOP_REPLICA]
    assert kinds(four, done) == [EventKind.FOLLOWER_UPDATE]
