"""Which answer a produce or a fetch gets (``replica_rules``): pure, over plain values."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from raftlog.cluster.replica_rules import (
    CONSUMER,
    FetchOutcome,
    FetchSpec,
    ProduceOutcome,
    acks_all_verdict,
    acks_error,
    estimated_bytes,
    fetch_answers_now,
    fetch_moved,
    fetch_offset_error,
    fetch_target_error,
    produce_target_error,
    read_bytes_limit,
    readable_end,
)
from raftlog.cluster.replication import LeaderReplication
from raftlog.proto.codes import ErrorCode
from raftlog.raft.metadata_records import TopicRecord
from raftlog.segments.clock import MonoMs

TOPIC = TopicRecord("t", 1, 2, 3, ())  # partitions 0 and 1


@dataclass
class Replica:
    name: str = "t-0"
    leader: LeaderReplication | None = None
    leader_id: int = 1
    leader_epoch: int = 4


def leading(epoch: int = 4, isr: tuple[int, ...] = (1, 2)) -> Replica:
    state = LeaderReplication.start(1, (1, 2, 3), isr, epoch, 9, 10, 0, 1000, MonoMs(0))
    return Replica(leader=state, leader_epoch=epoch)


def lookup(name: str) -> TopicRecord | None:
    return TOPIC if name == "t" else None


def fetch_code(
    spec: FetchSpec, replica: Replica | None, *, replica_id: int = 2, ready: bool = True
) -> str:
    found = fetch_target_error(ready, spec, replica_id, replica, lookup)
    return ErrorCode.NONE if found is None else found[0]


@pytest.mark.parametrize(
    ("current_leader_epoch", "code"),
    [
        (-1, ErrorCode.NONE),  # the fetcher does not say: no check
        (4, ErrorCode.NONE),
        (3, ErrorCode.FENCED_LEADER_EPOCH),  # it follows a leader we replaced
        (5, ErrorCode.UNKNOWN_LEADER_EPOCH),  # it knows a leadership our metadata has not shown yet
    ],
)
def test_a_fetch_is_checked_against_our_leader_epoch(current_leader_epoch: int, code: str) -> None:
    spec = FetchSpec("t", 0, 0, current_leader_epoch=current_leader_epoch)
    assert fetch_code(spec, leading(epoch=4)) == code
    assert fetch_code(spec, leading(epoch=4), replica_id=CONSUMER) == code


def test_whom_a_fetch_is_refused() -> None:
    spec = FetchSpec("t", 0, 0)
    assert fetch_code(spec, leading(), ready=False) == ErrorCode.LEADER_NOT_AVAILABLE
    assert fetch_code(FetchSpec("x", 0, 0), None) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_code(FetchSpec("t", 2, 0), None) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_code(spec, None) == ErrorCode.NOT_LEADER_OR_FOLLOWER  # exists; no replica here
    assert fetch_code(spec, Replica(leader=None)) == ErrorCode.NOT_LEADER_OR_FOLLOWER  # we follow
    assert (
        fetch_code(spec, leading(), replica_id=7) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    )  # no replica
    assert fetch_code(spec, leading(), replica_id=3) == ErrorCode.NONE  # a replica outside the ISR
    assert fetch_code(spec, leading(), replica_id=CONSUMER) == ErrorCode.NONE


def test_whom_a_produce_is_refused() -> None:
    def code(
        topic: str,
        index: int,
        replica: Replica | None,
        *,
        ready: bool = True,
        cut: str | None = None,
    ) -> str:
        found = produce_target_error(ready, topic, index, replica, lookup, cut)
        return ErrorCode.NONE if found is None else found[0]

    assert code("t", 0, leading(), ready=False) == ErrorCode.LEADER_NOT_AVAILABLE
    assert code("x", 0, None) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert code("t", -1, None) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert code("t", 1, None) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert code("t", 0, Replica(leader=None)) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    cut_off = produce_target_error(True, "t", 0, leading(), lookup, "lost the controller")
    assert cut_off == (ErrorCode.NOT_LEADER_OR_FOLLOWER, "lost the controller")
    assert code("t", 0, leading()) == ErrorCode.NONE
    invalid = acks_error(2)
    assert invalid is not None and invalid[0] == ErrorCode.INVALID_REQUIRED_ACKS
    assert [acks_error(a) for a in (-1, 0, 1)] == [None, None, None]


def test_a_waiting_acks_all_append_is_answered_by_the_hw_and_the_isr() -> None:
    replica = leading(epoch=4, isr=(1, 2))
    assert replica.leader is not None
    appended = ProduceOutcome("t", 0, base_offset=10, last_offset=11, leader_epoch=4)
    assert acks_all_verdict(replica, False, appended, 2) is None  # HW 0: waits
    replica.leader.on_follower_fetch(2, 12, 12, MonoMs(1))
    assert acks_all_verdict(replica, False, appended, 2) == (ErrorCode.NONE, "")
    assert acks_all_verdict(replica, True, appended, 2) is not None  # cut off: never NONE
    replica.leader.update_from_metadata((1,), 10)
    verdict = acks_all_verdict(replica, False, appended, 2)
    assert verdict is not None and verdict[0] == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    moved = Replica(leader=replica.leader, leader_epoch=5)
    verdict = acks_all_verdict(moved, False, appended, 1)
    assert verdict is not None and verdict[0] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    verdict = acks_all_verdict(Replica(leader=None), False, appended, 1)
    assert verdict is not None and verdict[0] == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_what_a_fetch_may_read() -> None:
    assert readable_end(CONSUMER, high_watermark=5, log_end_offset=9) == 5
    assert readable_end(2, high_watermark=5, log_end_offset=9) == 9
    assert fetch_offset_error(3, 3, 9, "t-0") is None
    assert fetch_offset_error(9, 3, 9, "t-0") is None  # the log end: nothing yet, no error
    assert [fetch_offset_error(o, 3, 9, "t-0") is None for o in (2, 10)] == [False, False]
    assert fetch_offset_error(2, 3, 9, "t-0") == (
        ErrorCode.OFFSET_OUT_OF_RANGE,
        "offset 2 is outside [3, 9] of t-0",
    )
    assert read_bytes_limit(5, 5, 100, 1000) is None  # at the readable end
    assert read_bytes_limit(4, 5, 100, 0) is None  # the request's budget is spent
    assert read_bytes_limit(4, 5, 100, 1000) == 100
    assert read_bytes_limit(4, 5, 100, 30) == 30


def test_when_a_fetch_is_answered_without_waiting() -> None:
    empty = FetchOutcome("t", 0)
    some = FetchOutcome("t", 0, records=b"x" * 10)
    assert not fetch_answers_now([empty], min_bytes=1, max_wait_ms=500)
    assert not fetch_answers_now([some], min_bytes=11, max_wait_ms=500)
    assert fetch_answers_now([some, empty], min_bytes=10, max_wait_ms=500)
    assert fetch_answers_now([empty], min_bytes=1, max_wait_ms=0)
    assert fetch_answers_now([], min_bytes=1, max_wait_ms=500)
    assert fetch_answers_now([FetchOutcome("t", 0, ErrorCode.FENCED_LEADER_EPOCH)], 1, 500)
    assert fetch_answers_now([FetchOutcome("t", 0, diverging_epoch=(0, 2))], 1, 500)


def test_a_waiting_fetch_ends_when_its_partition_moves() -> None:
    assert not fetch_moved(5, 4, end=7, leader_epoch=4)  # more to read: the bytes decide
    assert fetch_moved(5, 4, end=7, leader_epoch=5)  # a new leadership
    assert fetch_moved(5, 4, end=3, leader_epoch=4)  # truncated under it


def test_the_bytes_a_waiting_fetch_could_read_are_estimated_from_the_log_average() -> None:
    assert estimated_bytes(10, 10, 0, 100, 10_000) == 0
    assert estimated_bytes(10, 20, 0, 100, 10_000) == 1000  # 100 bytes a record
    assert estimated_bytes(10, 11, 0, 100, 10) == 1  # any record counts as at least a byte
