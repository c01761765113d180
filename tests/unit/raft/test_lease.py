"""The leader-lease rules (raft/election_rules.py, hazard 9 of raft/pysyncobj_guards.py), run
directly: which echoes count, the time a majority vouches for, and when the lease holds.

Times are dyadic (0.25, 10.5, ...) so that differences are exact in binary floating point and
the edges (a lease that has just expired) are tested exactly.
"""

from __future__ import annotations

import math

import pytest

from raftlog.raft.election_rules import (
    LeaseAcks,
    lease_holds,
    majority_acked_at,
    record_lease_ack,
)

LEASE_S = 0.25
PEERS_3 = ["b:1", "c:1"]  # a group of 3 voters, seen from its leader
PEERS_5 = ["b:1", "c:1", "d:1", "e:1"]


def ack(acks: LeaseAcks, peer: str, echo: object, *, echo_term: object = 7) -> LeaseAcks:
    """A pong received by the leader of term 7."""
    return record_lease_ack(
        acks, peer=peer, echo=echo, echo_term=echo_term, current_term=7, is_leader=True
    )


# ---- which echoes count -------------------------------------------------------------------------


def test_an_echo_in_our_term_is_recorded_per_peer() -> None:
    acks = ack(ack(LeaseAcks(), "b:1", 10.0), "c:1", 10.25)
    assert acks == LeaseAcks(7, {"b:1": 10.0, "c:1": 10.25})


def test_an_older_echo_never_replaces_a_newer_one() -> None:
    acks = ack(ack(LeaseAcks(), "b:1", 10.5), "b:1", 10.0)  # a reordered, late pong
    assert acks.sent_at_s == {"b:1": 10.5}


def test_an_echo_from_another_term_is_ignored() -> None:
    acks = ack(LeaseAcks(), "b:1", 10.0)
    assert ack(acks, "c:1", 10.25, echo_term=6) is acks  # a follower still in the old term
    assert ack(acks, "c:1", 10.25, echo_term=8) is acks  # one already in a newer term


def test_an_echo_that_is_not_a_send_time_is_ignored() -> None:
    acks = LeaseAcks()
    assert ack(acks, "b:1", None) is acks
    assert ack(acks, "b:1", 10) is acks  # our pings carry pysyncobj's float clock


def test_a_node_that_is_not_the_leader_records_nothing() -> None:
    acks = LeaseAcks()
    pong = record_lease_ack(
        acks, peer="b:1", echo=10.0, echo_term=7, current_term=7, is_leader=False
    )
    assert pong is acks


def test_a_new_term_starts_the_acks_afresh() -> None:
    old = LeaseAcks(6, {"b:1": 10.0, "c:1": 10.0})
    acks = ack(old, "b:1", 10.25)
    assert acks == LeaseAcks(7, {"b:1": 10.25})


# ---- the time a majority vouches for ------------------------------------------------------------


def test_three_voters_need_the_newest_echo_of_one_peer() -> None:
    acks = LeaseAcks(7, {"b:1": 10.0, "c:1": 9.75})
    assert majority_acked_at(acks, term=7, peers=PEERS_3, now_s=11.0) == 10.0


def test_five_voters_need_the_second_newest_echo() -> None:
    acks = LeaseAcks(7, {"b:1": 10.0, "c:1": 9.75, "d:1": 9.5})
    assert majority_acked_at(acks, term=7, peers=PEERS_5, now_s=11.0) == 9.75


@pytest.mark.parametrize(
    ("peers", "acked_at_s"),
    [(["b:1"], 9.5), (["b:1", "c:1", "d:1"], 9.75)],  # 2 voters need b; 4 need two of b, c, d
)
def test_an_even_group_needs_more_than_half(peers: list[str], acked_at_s: float) -> None:
    acks = LeaseAcks(7, {"b:1": 9.5, "c:1": 10.0, "d:1": 9.75})
    assert majority_acked_at(acks, term=7, peers=peers, now_s=11.0) == acked_at_s


def test_without_a_majority_of_echoes_there_is_no_time() -> None:
    acks = LeaseAcks(7, {"b:1": 10.0})  # self + b of 5: no majority
    assert majority_acked_at(acks, term=7, peers=PEERS_5, now_s=11.0) == -math.inf


def test_echoes_of_an_older_term_do_not_vouch_for_this_one() -> None:
    acks = LeaseAcks(6, {"b:1": 10.0, "c:1": 10.0})
    assert majority_acked_at(acks, term=7, peers=PEERS_3, now_s=11.0) == -math.inf


def test_a_single_voter_is_its_own_majority_now() -> None:
    assert majority_acked_at(LeaseAcks(), term=7, peers=[], now_s=11.0) == 11.0


# ---- when the lease holds -----------------------------------------------------------------------


def holds(*, now_s: float, view_at_s: float = 10.0, acked_at_s: float = 10.0) -> bool:
    return lease_holds(
        is_leader=True,
        now_s=now_s,
        view_at_s=view_at_s,
        majority_acked_at_s=acked_at_s,
        lease_s=LEASE_S,
    )


@pytest.mark.parametrize(
    ("now_s", "held"),
    [
        (10.0, True),
        (10.25, True),  # exactly lease_s after the echoed ping: still held
        (10.25 + 2**-20, False),  # just expired
        (11.0, False),
    ],
)
def test_the_lease_runs_lease_s_from_the_send_time_a_majority_echoed(
    now_s: float, held: bool
) -> None:
    assert holds(now_s=now_s) is held


def test_a_stale_view_loses_the_lease_whatever_the_echoes() -> None:
    # The Raft thread last published at 10.0 (stalled since); the echoes look fresh.
    assert holds(now_s=10.5, view_at_s=10.0, acked_at_s=10.5) is False


def test_old_echoes_lose_the_lease_however_fresh_the_view() -> None:
    assert holds(now_s=10.5, view_at_s=10.5, acked_at_s=10.0) is False


def test_no_majority_means_no_lease() -> None:
    assert holds(now_s=10.0, acked_at_s=-math.inf) is False


def test_a_follower_holds_no_lease() -> None:
    assert (
        lease_holds(
            is_leader=False, now_s=10.0, view_at_s=10.0, majority_acked_at_s=10.0, lease_s=LEASE_S
        )
        is False
    )


def test_a_leader_paused_past_its_lease_is_not_leader_on_resume() -> None:
    # SIGSTOP at 10.0 after a ping sent at 9.875 was echoed by b; on SIGCONT at 12.0 the
    # buffered pong of a ping sent at 9.9375 is processed: it is recorded by its send time,
    # so the majority time stays before the pause and the lease is gone.
    acks = ack(ack(LeaseAcks(), "b:1", 9.875), "b:1", 9.9375)
    acked_at_s = majority_acked_at(acks, term=7, peers=PEERS_3, now_s=12.0)
    assert acked_at_s == 9.9375
    assert holds(now_s=12.0, view_at_s=12.0, acked_at_s=acked_at_s) is False
