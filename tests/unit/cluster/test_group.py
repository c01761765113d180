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


# ---- the initial rebalance delay -------------------------------------------------------------


def test_the_first_round_of_an_empty_group_waits_for_more_members() -> None:
    g = Group("g", initial_delay_ms=3000)
    a = join(g, now=0)
    assert g.poll(2999)[0] == []  # a alone, but the delay is not over
    b = join(g, now=2000)  # arrives in the delay: the round waits 3000 more from here
    assert g.poll(4999)[0] == []
    answers, _ = g.poll(5000)
    assert {x.member_id for x in answers} == {a, b} and answers[0].generation == 1


def test_the_initial_delay_never_passes_the_rebalance_deadline() -> None:
    g = Group("g", initial_delay_ms=3000)
    join(g, now=0)  # rebalance timeout 5000: the round ends by 5000 whatever arrives
    join(g, now=2900)
    join(g, now=4900)
    assert g.poll(4999)[0] == []
    assert len(g.poll(5000)[0]) == 3


def test_later_rounds_are_not_delayed() -> None:
    g = Group("g", initial_delay_ms=3000)
    a = join(g)
    g.poll(3000)
    g.sync(a, 1, [], 3001)
    b = join(g, now=4000)
    join(g, a, now=4001)
    assert {x.member_id for x in g.poll(4002)[0]} == {a, b}


# ---- static membership (KIP-345) ----------------------------------------------------------------


def static_join(g: Group, instance: str, member: str = "", now: int = 0) -> str:
    return g.join(member, "c", 3000, 5000, RANGE, now, instance)


def stable_pair() -> tuple[Group, str, str]:
    g = Group("g")
    a, b = static_join(g, "ia"), static_join(g, "ib")
    answers, _ = g.poll(1)
    leader = next(x.member_id for x in answers if x.members)
    g.sync(leader, 1, [(a, b"A"), (b, b"B")], 2)
    return g, a, b


def test_a_restarted_static_member_takes_its_place_back_without_a_rebalance() -> None:
    g, a, b = stable_pair()
    again = static_join(g, "ia", now=100)  # a new process: no member id
    assert again != a and a not in g.members and g.state is GroupState.STABLE
    answers, _ = g.poll(101)  # its answer is due at once: same generation, no round
    assert [(x.member_id, x.generation) for x in answers] == [(again, 1)]
    assert g.sync(again, 1, [], 102)[0].assignment == b"A"  # its old partitions
    g.heartbeat(b, 1, 103)  # the other member noticed nothing
    with pytest.raises(GroupError) as caught:  # the old instance is fenced, not re-admitted
        g.heartbeat(a, 1, 104, "ia")
    assert caught.value.code == ErrorCode.FENCED_INSTANCE_ID
    with pytest.raises(GroupError) as caught:
        static_join(g, "ia", member=a, now=105)
    assert caught.value.code == ErrorCode.FENCED_INSTANCE_ID


def test_a_static_member_back_with_other_assignors_starts_a_round() -> None:
    g, _a, b = stable_pair()
    again = g.join("", "c", 3000, 5000, (("range", b"s"), ("sticky", b"s")), 100, "ia")
    assert g.state is GroupState.PREPARING_REBALANCE and g.poll(101)[0] == []
    join(g, b, now=102)
    assert {x.member_id for x in g.poll(103)[0]} == {again, b}


def test_an_expired_static_member_leaves_and_its_instance_id_is_free() -> None:
    g, a, b = stable_pair()
    g.heartbeat(b, 1, 3000)
    _, expired = g.poll(3500)
    assert expired == [a] and "ia" not in g.static
    fresh = static_join(g, "ia", now=3600)
    assert fresh in g.members and g.static["ia"] == fresh


# ---- persistence: what a new coordinator loads ------------------------------------------------


def test_a_snapshot_restores_generation_members_and_assignments() -> None:
    g, a, b = stable_pair()
    loaded = Group("g")
    loaded.restore(g.snapshot(), 50_000, stable=True)
    assert loaded.state is GroupState.STABLE and loaded.generation == 1
    assert loaded.leader_id == g.leader_id and loaded.protocol == "range"
    assert loaded.static == {"ia": a, "ib": b}
    loaded.heartbeat(a, 1, 50_001)  # same ids, same generation: nobody rejoins
    assert loaded.sync(b, 1, [], 50_002)[0].assignment == b"B"
    loaded.check_commit(a, 1)
    assert loaded.poll(52_999)[1] == []  # every session restarted at the load


def test_a_snapshot_older_than_the_generation_makes_the_known_members_rejoin() -> None:
    g, a, b = stable_pair()
    loaded = Group("g", generation=2)  # a later round completed, its sync was never stored
    loaded.restore(g.snapshot(), 100, stable=False)
    assert loaded.state is GroupState.PREPARING_REBALANCE and loaded.generation == 2
    join(loaded, a, now=101)
    join(loaded, b, now=102)  # known member ids: no UNKNOWN_MEMBER_ID
    answers, _ = loaded.poll(103)
    assert {x.member_id for x in answers} == {a, b} and answers[0].generation == 3


def test_an_empty_snapshot_restores_an_empty_group() -> None:
    g, a, b = stable_pair()
    g.leave(a, 10)
    g.leave(b, 11)
    loaded = Group("g")
    loaded.restore(g.snapshot(), 12, stable=True)
    assert loaded.state is GroupState.EMPTY and not loaded.members and loaded.generation == 2


@pytest.mark.parametrize(
    "snapshot",
    [
        [1, "range"],
        "garbage",
        [1, "range", "a", [["m", "", "c", "x", 1, [], b""]]],
        [1, "r", "a", 5],
    ],
)
def test_an_unreadable_snapshot_changes_nothing(snapshot: object) -> None:
    g, a, b = stable_pair()
    with pytest.raises(GroupError) as caught:
        g.restore(snapshot, 50, stable=True)  # type: ignore[arg-type]
    assert caught.value.code == ErrorCode.CORRUPT_MESSAGE
    assert set(g.members) == {a, b} and g.state is GroupState.STABLE and g.generation == 1
