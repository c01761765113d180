"""The consumer-group state machine: rounds, generations, fencing, expiry."""

from __future__ import annotations

import pytest

from raftlog.cluster.group import Group, GroupError, GroupState
from raftlog.proto.codes import ErrorCode

RANGE = (("range", b"sub"),)


def join(g: Group, member: str = "", now: int = 0, protocols=RANGE) -> str:  # type: ignore[no-untyped-def]
    return g.join(member, "c", 3000, 5000, protocols, now)


def test_a_first_member_forms_generation_1_and_leads() -> None:
    g = Group("g")
    a = join(g)
    answers, _ = g.poll(1)
    assert [x.member_id for x in answers] == [a]
    assert answers[0].generation == 1 and answers[0].leader_id == a
    assert answers[0].members == ((a, b"sub"),) and answers[0].protocol == "range"
    assert g.sync(a, 1, [(a, b"p0,p1")], 2)[0].assignment == b"p0,p1"
    assert g.state is GroupState.STABLE


def test_a_second_member_makes_everyone_rejoin_and_the_old_generation_is_fenced() -> None:
    g = Group("g")
    a = join(g)
    g.poll(1)
    g.sync(a, 1, [(a, b"all")], 2)
    b = join(g, now=10)
    with pytest.raises(GroupError) as caught:
        g.heartbeat(a, 1, 11)
    assert caught.value.code == ErrorCode.REBALANCE_IN_PROGRESS
    assert g.poll(12)[0] == []  # a has not rejoined yet
    join(g, a, now=13)
    answers, _ = g.poll(14)
    assert {x.member_id for x in answers} == {a, b} and all(x.generation == 2 for x in answers)
    leader = next(x for x in answers if x.members)
    assert leader.leader_id == leader.member_id
    with pytest.raises(GroupError) as caught:
        g.heartbeat(a, 1, 15)
    assert caught.value.code == ErrorCode.ILLEGAL_GENERATION
    follower = b if leader.member_id == a else a
    assert g.sync(follower, 2, [], 16) == []  # waits for the leader
    due = g.sync(leader.member_id, 2, [(a, b"x"), (b, b"y")], 17)
    assert {(s.member_id, s.assignment) for s in due} == {(a, b"x"), (b, b"y")}  # all of them


def test_a_member_that_does_not_rejoin_by_the_deadline_is_dropped() -> None:
    g = Group("g")
    a = join(g)
    g.poll(1)
    g.sync(a, 1, [], 2)
    b = join(g, now=100)  # round deadline = 100 + 5000
    answers, _ = g.poll(5101)
    assert [x.member_id for x in answers] == [b] and a not in g.members


def test_silence_expires_a_member_and_starts_a_round() -> None:
    g = Group("g")
    a, b = join(g), join(g)
    g.poll(1)
    g.sync(a, 1, [], 2)
    g.heartbeat(b, 1, 2000)
    _, expired = g.poll(3500)  # a: last seen at 2 (sync), session 3000
    assert expired == [a] and g.state is GroupState.PREPARING_REBALANCE
    join(g, b, now=3501)
    answers, _ = g.poll(3502)
    assert [x.member_id for x in answers] == [b] and answers[0].generation == 2


def test_leaving_the_last_member_empties_and_commits_need_the_generation() -> None:
    g = Group("g")
    a = join(g)
    g.poll(1)
    with pytest.raises(GroupError) as caught:
        g.check_commit(a, 0)
    assert caught.value.code == ErrorCode.ILLEGAL_GENERATION
    with pytest.raises(GroupError):
        g.check_commit("", -1)  # the group has members
    g.sync(a, 1, [], 2)
    g.check_commit(a, 1)
    g.leave(a, 3)
    assert g.state is GroupState.EMPTY and g.generation == 2
    g.check_commit("", -1)  # an empty group takes admin commits


def test_bad_joins_are_refused() -> None:
    g = Group("g")
    with pytest.raises(GroupError, match="assignor"):
        g.join("", "c", 3000, 5000, (), 0)
    with pytest.raises(GroupError) as caught:
        g.join("nobody", "c", 3000, 5000, RANGE, 0)
    assert caught.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    join(g)
    with pytest.raises(GroupError) as caught:
        join(g, protocols=(("other", b""),))
    assert caught.value.code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_an_assignor_without_a_name_is_refused_at_join() -> None:
    """'' is how the group says "no assignor in common": a member may not name one so."""
    g = Group("g")
    with pytest.raises(GroupError) as caught:
        join(g, protocols=[("", b"subscription")])
    assert caught.value.code == ErrorCode.INVALID_REQUEST
