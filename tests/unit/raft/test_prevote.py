"""The pre-vote rules (raft/election_rules.py, hazard 14 of raft/pysyncobj_guards.py), run
directly: who grants a pre-vote, and when a would-be candidate may stand."""

from __future__ import annotations

import math

import pytest

from raftlog.raft.election_rules import (
    LogPosition,
    PrevoteAction,
    PrevoteRound,
    PrevoteStep,
    has_majority,
    prevote_granted,
    prevote_step,
    record_prevote_reply,
)

TIMEOUT_MIN_S = 0.15
ROUND_S = 0.0625  # dyadic, like the times below: exact in binary floating point
OWN_LAST = LogPosition(4, 10)


def grant(
    *,
    term: int = 5,
    candidate_last: LogPosition = OWN_LAST,
    is_leader: bool = False,
    recovering: bool = False,
    now_s: float = 2.0,
    leader_heard_at_s: float = 1.0,
    election_timeout_min_s: float = TIMEOUT_MIN_S,
) -> bool:
    """A follower at term 4, log ending at (term 4, index 10), that last heard a leader at
    t=1.0 and is asked at t=2.0 for term 5 by a candidate with the same log."""
    return prevote_granted(
        term=term,
        candidate_last=candidate_last,
        current_term=4,
        own_last=OWN_LAST,
        is_leader=is_leader,
        recovering=recovering,
        now_s=now_s,
        leader_heard_at_s=leader_heard_at_s,
        election_timeout_min_s=election_timeout_min_s,
    )


# ---- who grants ---------------------------------------------------------------------------------


def test_a_candidate_with_an_equal_log_and_a_higher_term_gets_the_vote() -> None:
    assert grant() is True


def test_a_never_heard_leader_does_not_block_a_grant() -> None:
    assert grant(leader_heard_at_s=-math.inf) is True


@pytest.mark.parametrize(
    ("candidate_last", "granted"),
    [
        (LogPosition(3, 50), False),  # older last term, however long: stale log
        (LogPosition(4, 9), False),  # same term, shorter
        (LogPosition(4, 10), True),  # the same log
        (LogPosition(4, 11), True),  # same term, longer
        (LogPosition(5, 1), True),  # newer last term, however short
    ],
)
def test_a_candidate_whose_log_is_behind_ours_is_refused(
    candidate_last: LogPosition, granted: bool
) -> None:
    assert grant(candidate_last=candidate_last) is granted


@pytest.mark.parametrize(("term", "granted"), [(3, False), (4, False), (5, True), (9, True)])
def test_only_a_term_above_ours_is_granted(term: int, granted: bool) -> None:
    assert grant(term=term) is granted


def test_a_node_that_heard_a_leader_recently_refuses() -> None:
    # 0.1 s since the last append_entries: the leader is alive, the asker is the cut-off one.
    assert grant(now_s=1.1, leader_heard_at_s=1.0) is False


def test_silence_of_exactly_the_minimum_election_timeout_is_enough() -> None:
    # now - heard >= election_timeout_min_s (dyadic values: exact in binary floating point)
    assert grant(now_s=1.25, leader_heard_at_s=1.0, election_timeout_min_s=0.25) is True
    assert grant(now_s=1.125, leader_heard_at_s=1.0, election_timeout_min_s=0.25) is False


def test_the_leader_never_grants() -> None:
    assert grant(is_leader=True) is False


def test_a_node_recovering_a_damaged_journal_never_grants() -> None:
    assert grant(recovering=True) is False  # hazard 15


# ---- when to stand ------------------------------------------------------------------------------


def step(
    round: PrevoteRound,
    *,
    now_s: float = 10.0,
    current_term: int = 4,
    peers: int = 2,
    connected: bool = True,
    recovering: bool = False,
) -> PrevoteStep:
    """By default: a voter of 3 (2 peers, connected) at term 4, at t=10.0."""
    return prevote_step(
        round,
        peers=peers,
        connected=connected,
        recovering=recovering,
        current_term=current_term,
        now_s=now_s,
        round_s=ROUND_S,
    )


def test_a_single_voter_stands_at_once() -> None:
    result = step(PrevoteRound(), peers=0, connected=False)
    assert result.action is PrevoteAction.STAND
    assert result.round == PrevoteRound()


def test_the_first_call_asks_for_the_next_term() -> None:
    result = step(PrevoteRound())
    assert result.action is PrevoteAction.ASK
    assert result.round == PrevoteRound(term=5, started_at_s=10.0)
    assert result.lost is False


def test_a_round_without_answers_waits_then_is_lost_and_asked_again() -> None:
    asked = step(PrevoteRound()).round
    waiting = step(asked, now_s=10.03125)
    assert waiting.action is PrevoteAction.WAIT
    assert waiting.round == asked
    expired = step(asked, now_s=10.0625)  # exactly round_s: over
    assert expired.action is PrevoteAction.ASK
    assert expired.lost is True
    assert expired.round == PrevoteRound(term=5, started_at_s=10.0625)


def test_a_yes_from_one_of_two_peers_is_a_majority_of_three() -> None:
    round = PrevoteRound(term=5, started_at_s=10.0)
    round = record_prevote_reply(round, peer="b:1", term=5, granted=True)
    result = step(round, now_s=10.01)
    assert result.action is PrevoteAction.STAND
    # spent: the next election needs a round of its own, and a later call asks again
    assert result.round.term == -1
    again = step(result.round, current_term=5, now_s=10.5)
    assert again.action is PrevoteAction.ASK
    assert again.lost is False
    assert again.round == PrevoteRound(term=6, started_at_s=10.5)


def test_five_voters_need_two_yeses_besides_their_own() -> None:
    round = PrevoteRound(term=5, started_at_s=10.0)
    round = record_prevote_reply(round, peer="b:1", term=5, granted=True)
    one = step(round, peers=4, now_s=10.01)
    assert one.action is PrevoteAction.WAIT
    round = record_prevote_reply(round, peer="c:1", term=5, granted=True)
    two = step(round, peers=4, now_s=10.01)
    assert two.action is PrevoteAction.STAND


def test_yeses_arriving_after_the_round_ran_out_do_not_count() -> None:
    round = PrevoteRound(term=5, started_at_s=10.0)
    round = record_prevote_reply(round, peer="b:1", term=5, granted=True)
    late = step(round, now_s=10.0625)  # the round just ran out
    assert late.action is PrevoteAction.ASK
    assert late.lost is True
    assert late.round.grants == frozenset()


def test_a_round_for_an_old_term_does_not_carry_over_to_a_new_one() -> None:
    # The node's term moved on (it heard of term 5) while its round asked for term 5.
    round = record_prevote_reply(
        PrevoteRound(term=5, started_at_s=10.0), peer="b:1", term=5, granted=True
    )
    result = step(round, current_term=5, now_s=10.01)
    assert result.action is PrevoteAction.ASK
    assert result.lost is False  # a round for another term is not "lost"
    assert result.round == PrevoteRound(term=6, started_at_s=10.01)


@pytest.mark.parametrize(("connected", "recovering"), [(False, False), (True, True)])
def test_a_node_with_nobody_to_ask_or_a_damaged_journal_stays_out(
    connected: bool, recovering: bool
) -> None:
    round = PrevoteRound(term=5, started_at_s=10.0, grants=frozenset({"b:1"}))
    result = step(round, now_s=10.01, connected=connected, recovering=recovering)
    assert result.action is PrevoteAction.STAY_OUT  # even with a majority of yeses in hand
    assert result.round == round
    assert result.lost is False


def test_refusals_and_answers_for_another_term_are_not_counted() -> None:
    round = PrevoteRound(term=5, started_at_s=10.0)
    assert record_prevote_reply(round, peer="b:1", term=5, granted=False) == round
    assert record_prevote_reply(round, peer="b:1", term=4, granted=True) == round
    assert record_prevote_reply(round, peer="b:1", term=5, granted=1) == round  # True only
    counted = record_prevote_reply(round, peer="b:1", term=5, granted=True)
    assert counted.grants == frozenset({"b:1"})
    # the same peer twice is one yes
    assert record_prevote_reply(counted, peer="b:1", term=5, granted=True) == counted


@pytest.mark.parametrize(
    ("votes", "voters", "majority"),
    [(1, 1, True), (1, 2, False), (2, 2, True), (2, 3, True), (2, 4, False), (3, 5, True)],
)
def test_majority(votes: int, voters: int, majority: bool) -> None:
    assert has_majority(votes, voters) is majority


def test_a_leaders_timeout_now_stands_without_a_pre_vote() -> None:
    # remove-voter of the leader hands leadership over with TimeoutNow: every peer heard that
    # leader just now and would refuse a pre-vote, so the target stands at once (etcd's
    # campaignTransfer); a damaged journal or nobody to ask still keeps it out
    asked = PrevoteRound(term=5, started_at_s=10.0)
    result = prevote_step(
        asked,
        peers=2,
        connected=True,
        recovering=False,
        current_term=4,
        now_s=10.01,
        round_s=ROUND_S,
        transfer_requested=True,
    )
    assert result.action is PrevoteAction.STAND
    assert result.round.term == -1  # spent, like a won round
    for connected, recovering in ((False, False), (True, True)):
        kept_out = prevote_step(
            asked,
            peers=2,
            connected=connected,
            recovering=recovering,
            current_term=4,
            now_s=10.01,
            round_s=ROUND_S,
            transfer_requested=True,
        )
        assert kept_out.action is PrevoteAction.STAY_OUT
