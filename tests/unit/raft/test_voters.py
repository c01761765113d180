"""The voter set's rules (raft/voters.py), its commands in the state machine and snapshot, the
store a joining voter's Raft member feeds (CatchingUpMachine), and the membership entry format."""

from __future__ import annotations

import pytest

from raftlog.raft.commands import (
    CancelVoter,
    PrepareVoter,
    RegisterBroker,
    SetVoters,
    decode_command,
    decode_result,
    encode_command,
)
from raftlog.raft.metadata import MetadataState
from raftlog.raft.raft_node import parse_membership
from raftlog.raft.store import CatchingUpMachine, MetadataStore
from raftlog.raft.voters import (
    MembershipRefusal,
    VoterRecord,
    check_add,
    check_remove,
    majority,
    membership_refusal,
    refusal_message,
    voters_after_add,
    voters_after_remove,
)

V1 = VoterRecord(1, "10.0.0.1:9192", "10.0.0.1:9092")
V2 = VoterRecord(2, "10.0.0.2:9192", "10.0.0.2:9092")
V3 = VoterRecord(3, "10.0.0.3:9192", "10.0.0.3:9092")
V4 = VoterRecord(4, "10.0.0.4:9192", "10.0.0.4:9092")
THREE = (V1, V2, V3)


def test_majorities() -> None:
    assert [majority(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]


def test_add_refuses_a_voter_id_or_address_twice() -> None:
    assert check_add(THREE, V4) is None
    assert "already a voter" in (check_add(THREE, V3) or "")
    assert "voter 2's" in (check_add(THREE, VoterRecord(9, V2.raft_address, "x:1")) or "")
    assert check_add(THREE, VoterRecord(-1, "h:1", "h:2")) is not None
    assert voters_after_add(THREE, V4) == (V1, V2, V3, V4)


def test_the_worked_example_of_the_module() -> None:
    # {1,2,3}, 3 dead: add 4, remove 3, then removing 2 while 4 is down is refused
    four = voters_after_add(THREE, V4)
    assert check_remove(four, 3, leader_id=1, answering={1, 2, 4}) is None
    after = voters_after_remove(four, 3)
    assert after == (V1, V2, V4)
    why = check_remove(after, 2, leader_id=1, answering={1, 2})
    assert why is not None and "need 2" in why and "[1]" in why
    assert check_remove(after, 2, leader_id=1, answering={1, 2, 4}) is None


def test_remove_refuses_the_leader_unknown_ids_and_the_last_voter() -> None:
    assert "active controller" in (check_remove(THREE, 1, leader_id=1, answering={1, 2, 3}) or "")
    assert "not a voter" in (check_remove(THREE, 7, leader_id=1, answering={1, 2, 3}) or "")
    assert "last voter" in (check_remove((V1,), 1, leader_id=2, answering={1}) or "")


def test_state_machine_prepare_then_set_voters_and_snapshot_round_trip() -> None:
    state = MetadataState()
    assert state.voters == () and state.joining_voter is None
    result = state.apply(encode_command(PrepareVoter(4, V4.raft_address, V4.grpc_address))).result
    assert result["ok"] and state.joining_voter == V4
    rows = tuple(v.as_row() for v in (V4, V2, V1))
    result = state.apply(encode_command(SetVoters(rows))).result
    assert result == {"voters": [1, 2, 4], "ok": True}
    assert state.voters == (V1, V2, V4) and state.joining_voter is None
    # a voter id or address already in the set is refused before anything changes
    refused = state.apply(encode_command(PrepareVoter(2, "10.9.9.9:1", "10.9.9.9:2"))).result
    assert "error" in refused and state.joining_voter is None
    restored = MetadataState.from_snapshot(state.snapshot())
    assert restored.voters == state.voters and restored.version == state.version
    state.apply(encode_command(PrepareVoter(5, "10.0.0.5:9192", "10.0.0.5:9092")))
    restored = MetadataState.from_snapshot(state.snapshot())
    assert restored.joining_voter == VoterRecord(5, "10.0.0.5:9192", "10.0.0.5:9092")


def test_a_snapshot_without_a_membership_change_is_written_as_before() -> None:
    import cbor2

    body = cbor2.loads(MetadataState().snapshot())
    assert "voters" not in body and "joining_voter" not in body


def test_set_voters_round_trips_through_the_codec() -> None:
    command = SetVoters((V1.as_row(), V4.as_row()))
    assert decode_command(encode_command(command)) == command


def _register(broker_id: int) -> bytes:
    return encode_command(RegisterBroker(broker_id, f"h:{broker_id}", broker_id))


def test_catching_up_machine_never_takes_the_store_back() -> None:
    # the store (an observer's) is at version 3; the new Raft member's log starts from nothing
    store = MetadataStore()
    commands = [_register(i) for i in range(1, 6)]
    for command in commands[:3]:
        store.apply(command)
    ahead = store.snapshot()
    machine = CatchingUpMachine(store)
    with pytest.raises(RuntimeError, match="catching up"):
        machine.snapshot()  # it would claim an older Raft index with a newer state
    for command in commands[:3]:
        result = decode_result(machine.apply(command))
        assert result["ok"]
    assert store.version == 3 and machine.position == 3
    machine.apply(commands[3])
    assert store.version == 4
    machine.snapshot()
    # an older snapshot (a leader's dump) only moves the position; a newer one is taken
    machine.restore(ahead)
    assert machine.position == 3 and store.version == 4
    machine.apply(commands[3])
    machine.apply(commands[4])
    assert store.version == 5
    with store.read() as state:
        assert sorted(state.brokers) == [1, 2, 3, 4, 5]


def test_membership_entries_are_recognised_and_others_are_not() -> None:
    from pysyncobj import pickle as pso_pickle

    entry = b"\x02" + pso_pickle.dumps(["add", "h:1", "h:1", 4, b"cmd"])
    assert parse_membership(entry) == ["add", "h:1", "h:1", 4, b"cmd"]
    assert parse_membership(b"\x00" + pso_pickle.dumps((1, ()))) is None
    assert parse_membership(b"\x02not a pickle") is None


def test_a_join_that_will_not_finish_is_cancelled_for_its_joiner_only() -> None:
    state = MetadataState()
    state.apply(encode_command(PrepareVoter(4, V4.raft_address, V4.grpc_address)))
    assert state.apply(encode_command(CancelVoter(5))).result["ok"]  # not the joiner: no-op
    assert state.joining_voter == V4
    assert state.apply(encode_command(CancelVoter(4))).result["ok"]
    assert state.joining_voter is None and state.voters == ()
    assert state.apply(encode_command(CancelVoter(4))).result["ok"]  # again: still fine


def test_a_leader_just_elected_is_not_ready_rather_than_busy_with_a_change() -> None:
    # Right after an election the new leader's log may hold an older leader's membership entry
    # above its commit index (committed, but the new leader learns that only by committing its
    # own no-op): the refusal must say the leader is not ready (retriable), not that a change
    # is in progress. Before its no-op is appended at all, likewise.
    assert membership_refusal(applied_index=41, noop_index=42, pending_change_index=40) is (
        MembershipRefusal.LEADER_NOT_READY
    )
    assert membership_refusal(applied_index=41, noop_index=42, pending_change_index=None) is (
        MembershipRefusal.LEADER_NOT_READY
    )
    assert membership_refusal(applied_index=5, noop_index=None, pending_change_index=None) is (
        MembershipRefusal.LEADER_NOT_READY
    )
    # its no-op applied: a membership entry still above the commit index is a change pending
    assert membership_refusal(applied_index=42, noop_index=42, pending_change_index=43) is (
        MembershipRefusal.CHANGE_PENDING
    )
    assert membership_refusal(applied_index=42, noop_index=42, pending_change_index=None) is None


def test_each_refusal_says_what_it_is() -> None:
    def message(refusal: MembershipRefusal, add: bool = False) -> str:
        return refusal_message(
            refusal, add=add, address="10.0.0.3:9192", term=7, pending_change_index=43
        )

    not_ready = message(MembershipRefusal.LEADER_NOT_READY)
    assert "term 7" in not_ready and "retry" in not_ready
    assert "not committed" not in not_ready and "another" not in not_ready
    assert "index 43 is not committed yet" in message(MembershipRefusal.CHANGE_PENDING)
    nothing = message(MembershipRefusal.NOTHING_TO_CHANGE, add=True)
    assert "already a member" in nothing and "not committed" not in nothing
