"""Voter replacement at the quorum level: add and remove voters of a running Raft group.

Several ``RaftQuorum`` nodes in this process (as test_durability.py does): a voter joins (it
starts naming the current voters and itself, and is refused by everyone until the leader
appends the membership entry that adds it), a dead one leaves, the new set commits without the
old members, and a restarted voter comes back with the membership of its log, not its config.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import (
    LeaderNotReadyError,
    MembershipChangeRefusedError,
    QuorumConfig,
    QuorumError,
)

from .test_quorum import SECRET, ListMachine, free_port, wait_until


def _config(node_id: int, voters: dict[int, str], data_dir: Path) -> QuorumConfig:
    return QuorumConfig(
        node_id=node_id,
        voters=voters,
        secret=SECRET,
        data_dir=str(data_dir / f"n{node_id}"),
        log_compaction_min_entries=20,
    )


class Group:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.addresses = {i: f"127.0.0.1:{free_port()}" for i in range(1, 6)}
        self.quorums: dict[int, RaftQuorum] = {}
        self.machines: dict[int, ListMachine] = {}

    def start(self, node_id: int, voters: list[int]) -> RaftQuorum:
        machine = ListMachine()
        quorum = RaftQuorum(
            _config(node_id, {i: self.addresses[i] for i in voters}, self.tmp_path), machine
        )
        self.quorums[node_id], self.machines[node_id] = quorum, machine
        return quorum

    def stop(self, node_id: int) -> None:
        self.quorums.pop(node_id).close()

    def leader(self) -> RaftQuorum:
        return wait_until(
            "a leader",
            lambda: next((q for q in self.quorums.values() if q.is_leader()), None),
            10,
        )

    def submit(self, text: str, timeout_s: float = 5.0) -> int:
        deadline_tries = 50
        for _ in range(deadline_tries):
            try:
                result = self.leader().submit(text.encode(), timeout_s)
                return int(cbor2.loads(result))
            except QuorumError:
                continue
        raise AssertionError(f"{text} never committed")

    def change(self, *, add: bool, node_id: int, timeout_s: float = 10.0) -> bytes:
        done = threading.Event()
        outcome: list[tuple[bytes | None, QuorumError | None]] = []

        def callback(result: bytes | None, error: QuorumError | None) -> None:
            outcome.append((result, error))
            done.set()

        self.leader().change_voters(
            add=add,
            node_id=node_id,
            address=self.addresses[node_id],
            command=f"voters {'+' if add else '-'}{node_id}".encode(),
            timeout_s=timeout_s,
            callback=callback,
        )
        assert done.wait(timeout_s + 2)
        result, error = outcome[0]
        if error is not None:
            raise error
        assert result is not None
        return result

    def close(self) -> None:
        for quorum in self.quorums.values():
            quorum.close()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    g = Group(tmp_path)
    try:
        yield g
    finally:
        g.close()


def _members(quorum: RaftQuorum) -> set[int]:
    return set(quorum.voters())


def test_replace_a_dead_voter_and_lose_another(group: Group) -> None:
    for i in (1, 2, 3):
        group.start(i, [1, 2, 3])
    group.submit("a")
    # voter 3 dies for good (not the leader: the leader cannot remove itself)
    dead = next(i for i, q in group.quorums.items() if not q.is_leader())
    group.stop(dead)
    survivors = sorted(set(group.quorums) - {dead})
    group.submit("b")
    # 4 starts naming the current voters and itself; nobody talks to it yet
    group.start(4, [1, 2, 3, 4])
    group.change(add=True, node_id=4)
    wait_until("4 caught up", lambda: b"voters +4" in group.machines[4].items, 10)
    assert _members(group.leader()) == {1, 2, 3, 4}
    with pytest.raises(MembershipChangeRefusedError):
        group.change(add=True, node_id=4)
    group.change(add=False, node_id=dead)
    for q in group.quorums.values():
        wait_until("{1,2,3,4} - dead", lambda q=q: _members(q) == {*survivors, 4}, 10)
    group.submit("c")
    # lose one more original voter: the two left (one is 4) are a majority of three
    other = next(i for i in survivors if not group.quorums[i].is_leader())
    group.stop(other)
    position = group.submit("d")
    assert position > 0
    remaining = sorted(group.quorums)
    assert 4 in remaining and len(remaining) == 2
    for i in remaining:
        wait_until(f"{i} applied d", lambda i=i: b"d" in group.machines[i].items, 10)
    # a restarted voter comes back with the membership of its log, not its config
    leader_id = next(i for i, q in group.quorums.items() if q.is_leader())
    follower = next(i for i in remaining if i != leader_id)
    group.stop(follower)
    restarted = group.start(follower, [1, 2, 3] if follower != 4 else [1, 2, 3, 4])
    expected = {*survivors, 4}  # ``other`` is stopped, not removed
    wait_until("restarted voter's membership", lambda: _members(restarted) == expected, 10)
    group.submit("e")


def test_a_change_right_after_an_election_is_refused_only_as_not_ready(group: Group) -> None:
    """A leader just elected refuses membership changes until its term's no-op is applied: the
    refusal says so (retriable), where it used to blame "another membership change not
    committed yet" with none in the log at all; asked again, the change commits."""
    for i in (1, 2, 3, 4):
        group.start(i, [1, 2, 3, 4])
    group.submit("a")
    group.stop(next(i for i, q in group.quorums.items() if q.is_leader()))
    leader = wait_until(
        "a new leader",
        lambda: next((q for q in group.quorums.values() if q.is_leader()), None),
        10,
    )
    leaving = next(i for i, q in group.quorums.items() if q is not leader)
    refusals: list[QuorumError] = []
    for _ in range(100):
        try:
            group.change(add=False, node_id=leaving, timeout_s=5)
            break
        except LeaderNotReadyError as error:
            assert error.retriable and "not applied its first entry" in str(error)
            refusals.append(error)
            time.sleep(0.01)
    else:
        raise AssertionError(f"never committed: {refusals[-1:]}")
    print(f"refused {len(refusals)} time(s) as not ready, then committed")
    wait_until("the removal applied", lambda: leaving not in set(leader.voters()), 10)
