"""Rules 2, 3 and 7 of the metadata state machine run directly (raft/partition_rules.py); the
scenarios through MetadataState are in test_metadata.py and test_eligible_leaders.py."""

from __future__ import annotations

from raftlog.raft.metadata_records import NO_LEADER, PartitionRecord
from raftlog.raft.partition_rules import choose_leader, eligibility, with_roles

RECORD = PartitionRecord("t", 0, 1, (1, 2, 3), (1, 2, 3), 1, 4, 9)


def test_replicas_leaving_an_isr_below_min_isr_stay_eligible_until_it_recovers() -> None:
    assert eligibility(RECORD, (2,), min_isr=2) == ((1, 3), ())
    shrunk = with_roles(RECORD, 2, (2,), (1, 3), ())
    assert eligibility(shrunk, (2, 3), min_isr=2) == ((), ())  # back at min ISR: cleared


def test_an_unsafe_replica_is_not_eligible() -> None:
    assert eligibility(RECORD, (2,), min_isr=2, unsafe=3) == ((1,), ())


def test_with_no_safe_replica_left_the_last_known_ones_are_remembered() -> None:
    alone = with_roles(RECORD, 1, (1,), (), ())  # 1 is the last safe replica, then loses data
    assert eligibility(alone, (), min_isr=2, unsafe=1) == ((), (1,))


def never() -> bool:
    raise AssertionError("the unclean setting is read only when nothing safe is live")


def test_the_first_live_isr_member_leads_then_an_elr_member_alone() -> None:
    assert choose_leader(RECORD, (2, 3), (), (), live=lambda b: b != 2, unclean=never) == (
        3,
        (2, 3),
    )
    assert choose_leader(RECORD, (2,), (1, 3), (), live=lambda b: b == 3, unclean=never) == (
        3,
        (3,),
    )


def test_an_out_of_sync_replica_leads_only_when_the_topic_allows_unclean_election() -> None:
    def live(b: int) -> bool:
        return b == 3

    assert choose_leader(RECORD, (1,), (), (), live=live, unclean=lambda: False) == (
        NO_LEADER,
        (1,),
    )
    assert choose_leader(RECORD, (1,), (), (), live=live, unclean=lambda: True) == (3, (3,))
    # unclean: a live last known safe replica first, it holds the most
    assert choose_leader(RECORD, (), (), (3, 2), live=lambda b: b > 1, unclean=lambda: True) == (
        3,
        (3,),
    )


def test_epochs_move_only_with_a_change() -> None:
    assert with_roles(RECORD, 1, (1, 2, 3), (), ()) is RECORD
    isr_change = with_roles(RECORD, 1, (1, 2), (), ())
    assert (isr_change.leader_epoch, isr_change.partition_epoch) == (4, 10)
    leader_change = with_roles(RECORD, 2, (1, 2, 3), (), ())
    assert (leader_change.leader_epoch, leader_change.partition_epoch) == (5, 10)
