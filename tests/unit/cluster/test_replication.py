"""Replication rules: HW over the maximal ISR, ISR shrink/expand, acks=all, follower truncation
by leader epoch (the KIP-101 scenarios, with real logs)."""

from __future__ import annotations

from pathlib import Path

from raftlog.cluster.partition import Partition
from raftlog.cluster.replication import (
    FollowerAction,
    FollowerDecision,
    IsrProposal,
    LeaderReplication,
    alter_partition_outcome,
    divergence_truncation_offset,
    diverging_epoch,
    fetch_epoch_error,
    follower_decision,
)
from raftlog.proto.codes import ErrorCode
from raftlog.segments import Log, build_batch
from raftlog.segments.clock import SYSTEM_CLOCK, MonoMs

LAG_MS = 1000


def leader(isr: tuple[int, ...] = (1, 2, 3), leo: int = 10, hw: int = 0) -> LeaderReplication:
    return LeaderReplication.start(1, (1, 2, 3), isr, 5, 7, leo, hw, LAG_MS, now_ms=0)


def test_hw_is_the_minimum_over_the_isr_and_never_goes_back() -> None:
    state = leader()
    assert not state.on_follower_fetch(2, 10, 10, now_ms=1)  # 3 not heard from yet
    assert state.high_watermark == 0
    assert state.on_follower_fetch(3, 6, 10, now_ms=2)
    assert state.high_watermark == 6
    assert state.on_follower_fetch(3, 10, 10, now_ms=3) and state.high_watermark == 10
    state.followers[2].log_end_offset = 4  # a stale report can never pull the HW back
    assert not state.update_high_watermark(10) and state.high_watermark == 10


def test_a_sole_leader_moves_the_hw_with_its_own_leo() -> None:
    state = leader(isr=(1,))
    assert state.update_high_watermark(25) and state.high_watermark == 25


def test_the_hw_stands_still_while_the_isr_is_below_min_isr() -> None:
    """KIP-966: below min ISR nothing is committed, so the replicas that left the ISR (the ELR)
    still hold everything below the HW and may be elected if this leader loses power."""
    state = LeaderReplication.start(
        1, (1, 2, 3), (1,), 5, 7, 10, 4, LAG_MS, now_ms=0, min_insync_replicas=2
    )
    assert not state.update_high_watermark(25) and state.high_watermark == 4
    state.update_from_metadata((1, 2), partition_epoch=8)
    assert state.on_follower_fetch(2, 25, 25, now_ms=1) and state.high_watermark == 25


def test_a_lagging_follower_is_proposed_out_but_counts_until_committed() -> None:
    state = leader()
    state.on_follower_fetch(2, 10, 10, now_ms=100)
    state.on_follower_fetch(3, 4, 10, now_ms=100)
    assert state.high_watermark == 4
    assert state.check_isr(10, now_ms=900) is None  # within the lag window
    proposal = state.check_isr(10, now_ms=1001)
    assert proposal == IsrProposal((1, 2), 5, 7, (-1, -1))
    assert state.check_isr(10, now_ms=1002) is None  # one in flight
    # pending removal: 3 still holds the HW back
    assert not state.update_high_watermark(10) and state.high_watermark == 4
    state.update_from_metadata((1, 2), partition_epoch=8)
    assert state.pending is None
    assert state.update_high_watermark(10) and state.high_watermark == 10


def test_a_follower_that_keeps_fetching_but_never_catches_up_is_removed() -> None:
    state = leader(isr=(1, 2))
    leo, fetched = 10, 5
    for t in range(100, 3000, 100):
        # it never reaches even where the leader ended at its previous fetch
        state.on_follower_fetch(2, fetched, leo, now_ms=t)
        leo, fetched = leo + 5, fetched + 2
    assert state.followers[2].last_caught_up_ms == 0  # only the grace from becoming leader
    assert state.check_isr(leo, now_ms=3000) == IsrProposal((1,), 5, 7, (-1,))


def test_a_follower_keeping_pace_a_little_behind_stays_in_sync() -> None:
    state = leader(isr=(1, 2))
    leo = 10
    for t in range(100, 3000, 100):
        state.on_follower_fetch(2, leo - 5, leo, now_ms=t)  # reaches the previous fetch's end
        leo += 5
    assert state.check_isr(leo, now_ms=3000) is None


def test_caught_up_at_the_previous_fetch_counts() -> None:
    state = leader(isr=(1, 2))
    state.on_follower_fetch(2, 10, 10, now_ms=100)  # caught up
    state.on_follower_fetch(2, 10, 20, now_ms=900)  # the leader grew meanwhile: not at the end
    assert state.followers[2].last_caught_up_ms == 100
    state.on_follower_fetch(2, 20, 30, now_ms=1500)  # reached the LEO seen at t=900
    assert state.followers[2].last_caught_up_ms == 900
    assert state.check_isr(30, now_ms=1800) is None


def test_a_caught_up_follower_is_proposed_back_and_counts_as_soon_as_proposed() -> None:
    state = leader(isr=(1, 2), leo=10)
    state.on_follower_fetch(2, 10, 10, now_ms=10)
    assert state.high_watermark == 10
    state.on_follower_fetch(3, 8, 10, now_ms=20)
    assert state.check_isr(10, now_ms=30) is None  # 3 is below the HW
    state.on_follower_fetch(3, 10, 10, now_ms=40)
    assert state.check_isr(10, now_ms=50) == IsrProposal((1, 2, 3), 5, 7, (-1, -1, -1))
    assert state.maximal_isr == (1, 2, 3)
    # the maximal ISR holds the HW back to the joining member's progress
    state.on_follower_fetch(2, 15, 15, now_ms=60)
    assert state.high_watermark == 10


def test_a_follower_must_reach_the_start_of_the_current_epoch_to_join() -> None:
    state = LeaderReplication.start(1, (1, 2), (1,), 5, 7, 50, 50, LAG_MS, now_ms=0)
    state.on_follower_fetch(2, 40, 50, now_ms=1)
    state.high_watermark = 40  # even when the HW is below
    assert state.check_isr(50, now_ms=2) is None
    state.on_follower_fetch(2, 50, 50, now_ms=3)
    assert state.check_isr(50, now_ms=4) == IsrProposal((1, 2), 5, 7, (-1, -1))


def test_acks_all_needs_the_hw_past_the_batch_and_enough_isr() -> None:
    state = leader(isr=(1, 2))
    assert state.acks_all_outcome(9, min_insync_replicas=2) is None
    state.on_follower_fetch(2, 10, 10, now_ms=1)
    assert state.acks_all_outcome(9, 2) == ErrorCode.NONE
    state.update_from_metadata((1,), 9)
    assert state.acks_all_outcome(9, 2) == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    assert state.acks_all_outcome(9, 1) == ErrorCode.NONE
    # below min ISR the HW stands still: a batch past it is answered at once, not timed out
    assert state.acks_all_outcome(20, 2) == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND


def test_stale_metadata_never_rolls_the_isr_back() -> None:
    state = leader()
    state.update_from_metadata((1, 2), 9)
    state.update_from_metadata((1, 2, 3), 8)
    assert state.isr == (1, 2) and state.partition_epoch == 9


# ---- follower truncation by leader epoch: the KIP-101 scenarios ---------------------------------


def append(log: Log, count: int, epoch: int, tag: str) -> None:
    for i in range(count):
        log.append(build_batch([f"{tag}{i}".encode()], timestamp_ms=1), leader_epoch=epoch)


def truncation(follower: Log, leader_log: Log) -> int:
    """What a follower does on a diverging-epoch answer: ask for its latest epoch's end."""
    epoch, end = leader_log.end_offset_for_epoch(follower.latest_epoch)
    return divergence_truncation_offset(
        epoch, end, follower.end_offset_for_epoch(epoch), follower.log_end_offset
    )


def test_kip101_scenario_1_leader_dies_before_the_follower_learned_the_hw(tmp_path: Path) -> None:
    # A (leader) and B both hold m0, m1 in epoch 0; B's HW is still 1 when A dies. KIP-101: the
    # old rule (truncate to own HW) made B drop m1, then A came back, followed B, and truncated
    # m1 too — an acknowledged record lost. By epoch, B keeps m1.
    a, b = (
        Log(str(tmp_path / "a"), clock=SYSTEM_CLOCK),
        Log(str(tmp_path / "b"), clock=SYSTEM_CLOCK),
    )
    a_state = LeaderReplication.start(1, (1, 2), (1, 2), 0, 0, 0, 0, LAG_MS, now_ms=0)
    b_replica = Partition(("t", 0), 1, b, high_watermark=0)

    def b_fetches(now_ms: int) -> None:
        """B fetches from its log end; A answers with what follows and its HW after the fetch."""
        a_state.on_follower_fetch(2, b.log_end_offset, a.log_end_offset, MonoMs(now_ms))
        answer = a.read(b.log_end_offset, 1 << 20).data
        b_replica.append_as_follower(answer, a_state.high_watermark)

    append(a, 1, 0, "m")  # m0
    b_fetches(1)  # B gets m0; fetching from 0 proves nothing, so A's HW stays 0
    a.append(build_batch([b"m1"], timestamp_ms=1), leader_epoch=0)
    b_fetches(2)  # A's HW moves to 1 (B holds m0); B gets m1 and that HW
    b_hw = b_replica.high_watermark  # A dies before B's next fetch would bring HW 2
    assert (b_hw, b.log_end_offset, a_state.high_watermark) == (1, 2, 1)
    assert b_hw < b.log_end_offset  # so truncating to its own HW would have cut m1
    # B becomes leader in epoch 1; A restarts and follows B
    assert truncation(a, b) == 2  # A keeps both records


def test_kip101_scenario_2_replicas_diverge_after_two_quick_failovers(tmp_path: Path) -> None:
    # A (leader, epoch 0) wrote m0, m1; B got only m0. A dies; B leads epoch 1 and writes n1 at
    # offset 1; A comes back as a follower. Offset 1 differs: A must truncate to 1, not keep m1.
    a, b = (
        Log(str(tmp_path / "a"), clock=SYSTEM_CLOCK),
        Log(str(tmp_path / "b"), clock=SYSTEM_CLOCK),
    )
    append(a, 2, 0, "m")
    b.append_as_follower(a.read(0, 1 << 20).data[: len(a.read(0, 1).data)])
    assert b.log_end_offset == 1
    append(b, 1, 1, "n")
    cut = truncation(a, b)
    assert cut == 1
    a.truncate_to(cut)
    a.append_as_follower(b.read(1, 1 << 20).data)
    assert a.read(0, 1 << 20).data == b.read(0, 1 << 20).data


def test_a_follower_from_older_epochs_than_the_leader_holds_truncates_to_its_start() -> None:
    assert divergence_truncation_offset(-1, 300, (-1, -1), 500) == 300
    assert divergence_truncation_offset(-1, 300, (-1, -1), 200) == 200
    assert divergence_truncation_offset(-1, -1, (-1, -1), 200) == 200


def test_a_follower_that_never_wrote_in_the_leaders_epoch_cuts_where_its_next_epoch_began(
    tmp_path: Path,
) -> None:
    # leader: epochs 0 then 2 (0..119 in epoch 2 from 40); follower: epoch 0 then 3 from 80.
    # The leader answers our epoch 3 with (2, 120); we hold no epoch 2, and our epoch-0 data ends
    # at 80 — offsets 80.. were written by epoch 3 here and epoch 2 there: cut at 80.
    assert divergence_truncation_offset(2, 120, (0, 80), 150) == 80
    assert divergence_truncation_offset(2, 120, (-1, -1), 150) == 0
    leader_log, follower = (
        Log(str(tmp_path / "l"), clock=SYSTEM_CLOCK),
        Log(str(tmp_path / "f"), clock=SYSTEM_CLOCK),
    )
    append(leader_log, 40, 0, "a")
    append(leader_log, 80, 2, "b")
    follower.append_as_follower(leader_log.read(0, 1 << 20, max_offset=40).data)
    append(follower, 70, 3, "c")
    cut = truncation(follower, leader_log)
    assert cut == 40
    follower.truncate_to(cut)
    follower.append_as_follower(leader_log.read(40, 1 << 30).data)
    assert follower.read(0, 1 << 30).data == leader_log.read(0, 1 << 30).data


def test_a_fenced_broker_is_never_proposed_back_however_recent_its_fetch() -> None:
    state = leader(isr=(1, 2), leo=10)
    state.on_follower_fetch(2, 10, 10, now_ms=10)
    state.on_follower_fetch(3, 10, 10, now_ms=20)
    assert state.check_isr(10, now_ms=30, eligible=lambda b: b != 3) is None
    assert state.check_isr(10, now_ms=30) == IsrProposal((1, 2, 3), 5, 7, (-1, -1, -1))


def test_a_lost_alter_partition_is_proposed_again_after_its_timeout() -> None:
    """A proposal that is never answered and never committed (a dropped request, a controller
    that failed over first) must not stop the partition's ISR changes for the rest of the epoch."""
    state = leader()
    state.on_follower_fetch(2, 10, 10, now_ms=100)
    lost = state.check_isr(10, now_ms=1001)
    assert lost == IsrProposal((1, 2), 5, 7, (-1, -1))
    state.on_follower_fetch(2, 10, 10, now_ms=5000)
    assert state.check_isr(10, now_ms=5000) is None  # still in flight as far as we know
    later = 1001 + state.proposal_timeout_ms + 1
    state.on_follower_fetch(2, 10, 10, now_ms=later)  # 2 stays caught up all along
    again = state.check_isr(10, now_ms=later)
    assert again == lost  # proposed anew instead of waiting forever
    assert state.pending == again


def test_the_followers_decisions() -> None:
    """follower_decision: what a follower does with each kind of answer (fetcher.py carries it
    out). Our log: epoch 0 for offsets 0-9, epoch 2 from 10, LEO 15."""

    def ours(epoch: int) -> tuple[int, int]:
        return (0, 10) if epoch < 2 else (2, 15)

    def decide(code: str, diverging: tuple[int, int] | None = None, start: int = 0, end: int = 20):
        return follower_decision(code, diverging, ours, 15, start, end)

    assert decide(ErrorCode.NONE) == FollowerDecision(FollowerAction.APPEND)
    # the leader's epoch 1 ended at 12; we hold epoch 0 up to 10: truncate to 10 (KIP-279)
    assert decide(ErrorCode.NONE, (1, 12)) == FollowerDecision(FollowerAction.TRUNCATE, 10)
    assert decide(ErrorCode.OFFSET_OUT_OF_RANGE, start=30, end=40) == FollowerDecision(
        FollowerAction.RESTART_AT, 30
    )
    assert decide(ErrorCode.OFFSET_OUT_OF_RANGE, start=0, end=12) == FollowerDecision(
        FollowerAction.TRUNCATE, 12
    )
    assert decide(ErrorCode.OFFSET_OUT_OF_RANGE, start=0, end=20).action is FollowerAction.BACK_OFF
    assert decide(ErrorCode.UNKNOWN_LEADER_EPOCH).action is FollowerAction.BACK_OFF
    for code in (
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ):
        assert decide(code).action is FollowerAction.PARK


def test_the_leaders_fetch_checks() -> None:
    assert fetch_epoch_error(-1, 5) is None  # the fetcher does not know: no check
    assert fetch_epoch_error(5, 5) is None
    assert fetch_epoch_error(4, 5) == (ErrorCode.FENCED_LEADER_EPOCH, "epoch 4 < 5")
    assert fetch_epoch_error(6, 5) == (ErrorCode.UNKNOWN_LEADER_EPOCH, "epoch 6 > 5")

    def ours(epoch: int) -> tuple[int, int]:  # epoch 0 ends at 10, epoch 2 runs on to the LEO 15
        return (-1, -1) if epoch < 0 else ((0, 10) if epoch < 2 else (2, 15))

    assert diverging_epoch(-1, 12, ours, 0) is None
    assert diverging_epoch(2, 12, ours, 0) is None  # epoch 2 runs past 12: agrees
    assert diverging_epoch(0, 10, ours, 0) is None  # epoch 0 ends exactly where it fetches
    assert diverging_epoch(0, 12, ours, 0) == (0, 10)  # it holds epoch 0 past our end of it
    assert diverging_epoch(1, 12, ours, 0) == (0, 10)  # an epoch we never had
    assert diverging_epoch(0, 5, lambda e: (-1, -1), 3) == (-1, 3)  # we hold nothing that old


def test_an_unanswered_addition_stays_in_the_maximal_isr_and_is_sent_again() -> None:
    """Found by the simulation (seed 44): dropping an unanswered addition let the HW pass a
    replica the controller had in fact added to the ISR, which was then elected without them."""
    state = leader(isr=(1, 2))
    state.on_follower_fetch(2, 10, 10, now_ms=100)
    state.on_follower_fetch(3, 10, 10, now_ms=100)
    added = state.check_isr(10, now_ms=200)
    assert added == IsrProposal((1, 2, 3), 5, 7, (-1, -1, -1))
    state.proposal_answered(added, None, now_ms=300)  # a timeout: it may have been committed
    assert state.maximal_isr == (1, 2, 3) and state.pending == added
    assert state.check_isr(10, now_ms=1000) is None  # not before the backoff
    assert state.check_isr(10, now_ms=1301) == added  # the same proposal, sent again
    state.proposal_answered(added, False, now_ms=1400)  # a definite refusal: forgotten
    assert state.pending is None and state.maximal_isr == (1, 2)


def test_only_a_refusal_with_current_epochs_forgets_a_proposal() -> None:
    """Found by the simulation (seed 63): a resend of a proposal whose first send committed is
    refused for its now stale epochs; taking that refusal as definite dropped the addition."""
    assert alter_partition_outcome(None) is True
    assert alter_partition_outcome(ErrorCode.NONE) is True
    assert alter_partition_outcome(ErrorCode.INELIGIBLE_REPLICA) is False
    assert alter_partition_outcome(ErrorCode.INVALID_REQUEST) is False
    for unknown in (
        ErrorCode.INVALID_UPDATE_VERSION,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.NOT_CONTROLLER,
        ErrorCode.REQUEST_TIMED_OUT,
    ):
        assert alter_partition_outcome(unknown) is None, unknown
    state = leader(isr=(1, 2))
    state.on_follower_fetch(3, 10, 10, now_ms=100)
    added = state.check_isr(10, now_ms=200)
    assert added is not None
    state.proposal_answered(added, alter_partition_outcome(ErrorCode.INVALID_UPDATE_VERSION), 300)
    assert state.pending is added and state.maximal_isr == (1, 2, 3)
    state.update_from_metadata((1, 2, 3), partition_epoch=8)  # the metadata settles it
    assert state.pending is None and state.isr == (1, 2, 3)


def test_an_answer_to_an_older_proposal_leaves_the_pending_one_alone() -> None:
    state = leader(isr=(1, 2, 3))
    state.on_follower_fetch(2, 10, 10, now_ms=19_500)
    shrink = state.check_isr(10, now_ms=20_000)  # 3 lags: out
    assert shrink is not None and shrink.isr == (1, 2)
    state.update_from_metadata((1, 2), partition_epoch=8)  # committed before its answer came
    state.on_follower_fetch(3, 10, 10, now_ms=20_100)
    grow = state.check_isr(10, now_ms=20_200)
    assert grow is not None and grow.isr == (1, 2, 3)
    state.proposal_answered(shrink, False, 20_300)  # a late refusal of a resend of the old one
    assert state.pending is grow and state.maximal_isr == (1, 2, 3)


def test_a_restarted_follower_starts_from_nothing() -> None:
    """KIP-903: after a power loss a follower may hold less than its previous process reported;
    the leader counts only what the new incarnation shows, and ignores the old one's fetches."""
    state = leader(isr=(1, 2))
    state.on_follower_fetch(3, 10, 10, now_ms=100, incarnation=7)
    assert state.followers[3].log_end_offset == 10
    state.on_follower_fetch(3, 4, 10, now_ms=150, incarnation=8)  # restarted, lost its tail
    progress = state.followers[3]
    assert progress.incarnation == 8 and progress.log_end_offset == 4
    assert progress.last_caught_up_ms == -1  # the old process's catching up does not carry over
    assert state.check_isr(10, now_ms=200) is None
    state.on_follower_fetch(3, 10, 10, now_ms=160, incarnation=7)  # a zombie of the old one
    assert state.followers[3].log_end_offset == 4
    state.on_follower_fetch(3, 10, 10, now_ms=300, incarnation=8)
    added = state.check_isr(10, now_ms=400)
    assert added == IsrProposal((1, 2, 3), 5, 7, (-1, -1, 8))


def test_a_cleanly_restarted_isr_member_gets_a_lag_window() -> None:
    state = leader(isr=(1, 2, 3))
    state.on_follower_fetch(2, 6, 10, now_ms=100, incarnation=5)
    state.on_follower_fetch(3, 6, 10, now_ms=100, incarnation=7)
    assert state.high_watermark == 6
    state.on_follower_fetch(3, 8, 10, now_ms=5_000, incarnation=8)  # back, two records behind
    state.on_follower_fetch(2, 10, 10, now_ms=5_000, incarnation=5)
    assert state.check_isr(10, now_ms=5_500) is None  # within the window: not shrunk yet
    assert state.high_watermark == 8  # counted from what the new process showed


def test_a_silent_follower_leaves_before_the_lag_window_a_slow_one_does_not() -> None:
    """Issue 21: a follower from which no fetch arrives is cut off or dead; behind a ring or a
    bridge acks=all stalled the whole lag window (5 s in the chaos runs) behind it. One that
    keeps fetching, however far behind, keeps the full lag window."""
    state = LeaderReplication.start(
        1, (1, 2, 3), (1, 2, 3), 5, 7, 10, 0, 10_000, now_ms=0, replica_silence_ms_max=1000
    )
    for t in range(0, 3000, 400):  # 2 fetches every 400 ms but never catches up; 3 falls silent
        state.on_follower_fetch(2, 5, 10 + t, now_ms=t)
        if t < 400:
            state.on_follower_fetch(3, 10, 10, now_ms=t)
        proposal = state.check_isr(10 + t, now_ms=t)
        if proposal is not None:
            break
    assert proposal is not None and proposal.isr == (1, 2)
    assert t == 1200  # the first check past 1000 ms of silence (3's last fetch: at 0 ms)


def test_an_isr_member_gets_one_silence_window_when_a_leader_starts() -> None:
    state = LeaderReplication.start(
        1, (1, 2, 3), (1, 2), 5, 7, 10, 0, 10_000, now_ms=5000, replica_silence_ms_max=1000
    )
    assert state.check_isr(10, now_ms=5900) is None
    proposal = state.check_isr(10, now_ms=6100)
    assert proposal is not None and proposal.isr == (1,)


def test_a_follower_removed_for_silence_is_not_proposed_back_while_silent() -> None:
    """Seed-4242 run: removed for silence, a follower still inside its lag window was proposed
    straight back, and the ISR flapped every 100 ms (an AlterPartition each time) through a
    majorities ring. It rejoins only once it fetches again."""
    state = LeaderReplication.start(
        1, (1, 2, 3), (1, 2, 3), 5, 7, 10, 0, 10_000, now_ms=0, replica_silence_ms_max=1000
    )
    state.on_follower_fetch(2, 10, 10, now_ms=900)
    state.on_follower_fetch(3, 10, 10, now_ms=900)  # HW 10; then 3 falls silent
    state.on_follower_fetch(2, 10, 10, now_ms=1800)
    proposal = state.check_isr(10, now_ms=1950)
    assert proposal is not None and proposal.isr == (1, 2)
    state.update_from_metadata((1, 2), partition_epoch=8)
    for t in range(2000, 4000, 100):
        state.on_follower_fetch(2, 10, 10, now_ms=t)
        assert state.check_isr(10, now_ms=t) is None, t
    state.on_follower_fetch(3, 10, 10, now_ms=4000)
    proposal = state.check_isr(10, now_ms=4000)
    assert proposal is not None and proposal.isr == (1, 2, 3)
