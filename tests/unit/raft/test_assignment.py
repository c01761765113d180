"""Replica assignment spreads replicas and leaders evenly and across racks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.raft.assignment import AssignmentError, assign_replicas, rack_alternated


def test_the_worked_example_from_the_docstring() -> None:
    brokers = dict.fromkeys((1, 2, 3))
    assert assign_replicas(brokers, 6, 2) == [(1, 2), (2, 3), (3, 1), (1, 3), (2, 1), (3, 2)]
    assert rack_alternated({1: "a", 2: "a", 3: "b", 4: "b"}) == [1, 3, 2, 4]


def test_too_few_brokers_is_a_clear_error() -> None:
    with pytest.raises(AssignmentError, match="larger than the 2 available"):
        assign_replicas(dict.fromkeys((1, 2)), 3, 3)
    with pytest.raises(AssignmentError):
        assign_replicas(dict.fromkeys((1, 2)), 0, 1)


@given(
    n=st.integers(1, 7),
    rf=st.integers(1, 7),
    rounds=st.integers(1, 4),
)
def test_leaders_and_replicas_are_even(n: int, rf: int, rounds: int) -> None:
    rf = min(rf, n)
    brokers = dict.fromkeys(range(1, n + 1))
    assignment = assign_replicas(brokers, n * rounds, rf)
    assert all(len(set(r)) == rf for r in assignment)
    leaders = Counter(r[0] for r in assignment)
    replicas = Counter(b for r in assignment for b in r)
    assert set(leaders.values()) == {rounds}
    assert set(replicas.values()) == {rounds * rf}


@given(racks=st.integers(2, 4), per_rack=st.integers(1, 3), rf=st.integers(2, 4))
def test_replicas_of_a_partition_span_racks(racks: int, per_rack: int, rf: int) -> None:
    brokers = {r * 10 + i: f"rack{r}" for r in range(racks) for i in range(per_rack)}
    rf = min(rf, len(brokers))
    for replicas in assign_replicas(brokers, 12, rf):
        assert len({brokers[b] for b in replicas}) == min(rf, racks)


def test_the_start_follows_the_least_loaded_broker() -> None:
    brokers = dict.fromkeys((1, 2, 3))
    assert assign_replicas(brokers, 1, 1, leader_counts={1: 4, 2: 0, 3: 2}) == [(2,)]
