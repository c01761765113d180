"""A voter removed while it could not apply its removal (quorum_member.py's MembershipCheck):
when it asks, whom it asks, and which answer proves the removal (no sockets, a fake clock)."""

from __future__ import annotations

import asyncio
import dataclasses

from raftlog.cluster.metadata_observer import MetadataObserver
from raftlog.cluster.quorum_member import CHECK_PERIOD_S, SILENCE_S, MembershipCheck, removal_seen
from raftlog.proto import broker_pb2
from raftlog.raft.quorum_types import QuorumStatus
from raftlog.raft.store import MetadataStore
from raftlog.raft.voters import VoterRecord

V1 = VoterRecord(1, "h1:9192", "h1:9092")
V2 = VoterRecord(2, "h2:9192", "h2:9092")
V3 = VoterRecord(3, "h3:9192", "h3:9092")
V4 = VoterRecord(4, "h4:9192", "h4:9092")


def answer(
    responder: int, leader: int, members: list[VoterRecord], term: int = 7
) -> broker_pb2.DescribeQuorumResponse:
    rows = [broker_pb2.QuorumVoter(node_id=v.node_id, grpc_address=v.grpc_address) for v in members]
    return broker_pb2.DescribeQuorumResponse(
        leader_id=leader, responder_id=responder, term=term, members=rows
    )


def status(*, has_quorum: bool, is_leader: bool = False) -> QuorumStatus:
    base = MetadataObserver(3, MetadataStore(), {1: "h1:9192"}, lambda _: None).status()
    return dataclasses.replace(base, has_quorum=has_quorum, is_leader=is_leader)


def test_only_the_leaders_answer_without_us_proves_a_removal() -> None:
    assert removal_seen(3, answer(2, 2, [V1, V2, V4]))
    assert not removal_seen(3, answer(1, 2, [V1, V2, V4]))  # a follower's word: maybe stale
    assert not removal_seen(3, answer(2, 2, [V1, V2, V3]))  # still a voter
    assert not removal_seen(3, answer(2, -1, [V1, V2]))  # no leader known
    assert not removal_seen(3, answer(2, 2, []))  # no voter set at all
    assert not removal_seen(3, answer(2, 2, [V1, V2], term=0))  # an observer answered


def test_a_check_is_due_after_a_silence_and_then_at_most_once_a_period() -> None:
    now = [100.0]
    check = MembershipCheck(3, lambda address: asyncio.sleep(0), lambda: now[0])
    assert not check.due(status(has_quorum=True))
    assert not check.due(status(has_quorum=False))  # the silence starts now
    now[0] += SILENCE_S - 0.1
    assert not check.due(status(has_quorum=False))
    now[0] += 0.1
    assert check.due(status(has_quorum=False))
    assert not check.due(status(has_quorum=False))  # that check is still running
    check.checking = False
    now[0] += CHECK_PERIOD_S - 0.1
    assert not check.due(status(has_quorum=False))
    now[0] += 0.1
    assert check.due(status(has_quorum=False))
    check.checking = False
    assert not check.due(status(has_quorum=True))  # heard a leader: the silence is over
    now[0] += SILENCE_S
    assert not check.due(status(has_quorum=False))
    assert not check.due(None)  # no Raft member (or a join under way)
    assert not check.due(status(has_quorum=False, is_leader=True))


def test_the_check_asks_the_voters_then_the_leader_one_names() -> None:
    asked: list[str] = []
    answers = {
        V1.grpc_address: answer(1, 4, [V1, V2, V4]),  # 1 follows 4, which we never knew
        V4.grpc_address: answer(4, 4, [V1, V2, V4]),
    }

    async def describe(address: str) -> broker_pb2.DescribeQuorumResponse:
        asked.append(address)
        if address not in answers:
            raise ConnectionError(address)
        return answers[address]

    check = MembershipCheck(3, describe, lambda: 0.0)
    check.checking = True
    assert asyncio.run(check.removed([V1, V2, V3])) is True
    assert asked == [V1.grpc_address, V4.grpc_address]  # never ourselves; 2 was not needed
    assert check.checking is False

    asked.clear()
    answers[V4.grpc_address] = answer(4, 4, [V1, V3, V4])  # we are a voter after all
    assert asyncio.run(check.removed([V1, V2, V3])) is False
    assert asked == [V1.grpc_address, V4.grpc_address, V2.grpc_address]
