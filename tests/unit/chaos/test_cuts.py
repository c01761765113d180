"""Partition shapes and their cut sets, pure: halves, isolation, the majorities ring, the bridge,
and the one-way (sender, receiver) cuts a grudge or a set of groups puts in force."""

from __future__ import annotations

import random
from collections.abc import Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.chaos.cuts import (
    bridge_grudge,
    complete_grudge,
    cuts_for_groups,
    cuts_for_grudge,
    isolation_groups,
    majorities_ring,
    random_halves,
    ring_grudge,
    views,
)

SIZES = (3, 5)


def nodes_of(n: int) -> tuple[int, ...]:
    return tuple(range(1, n + 1))


def is_majority(group: Set[int], n: int) -> bool:
    return len(group) > n // 2


# ---- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", range(20))
def test_random_halves_cover_every_node_once_smaller_half_first(n: int, seed: int) -> None:
    small, large = random_halves(nodes_of(n), random.Random(seed))
    assert small | large == set(nodes_of(n))
    assert not small & large
    assert (len(small), len(large)) == (n // 2, n - n // 2)
    assert is_majority(large, n) and not is_majority(small, n)


def test_random_halves_depend_on_the_rng_only() -> None:
    picks = {random_halves(nodes_of(5), random.Random(s))[0] for s in range(50)}
    assert len(picks) > 3  # really random
    assert random_halves(nodes_of(5), random.Random(7)) == random_halves(
        [5, 4, 3, 2, 1], random.Random(7)
    )  # the input order does not matter


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", range(20))
def test_majorities_ring_every_view_is_a_distinct_majority(n: int, seed: int) -> None:
    ring = majorities_ring(nodes_of(n), random.Random(seed))
    assert set(ring) == set(nodes_of(n))
    for node, seen in ring.items():
        assert node in seen
        assert is_majority(seen, n), (node, seen)
        assert seen != frozenset(nodes_of(n))  # nobody sees everyone
    assert len(set(ring.values())) == n  # no two nodes share a view


@pytest.mark.parametrize("seed", range(20))
def test_majorities_ring_of_five_is_symmetric(seed: int) -> None:
    ring = majorities_ring(nodes_of(5), random.Random(seed))
    for a in nodes_of(5):
        for b in nodes_of(5):
            assert (b in ring[a]) == (a in ring[b])
        assert len(ring[a]) == 3  # itself and its two ring neighbours


@pytest.mark.parametrize("n", SIZES)
def test_ring_grudge_is_the_complement_of_the_views(n: int) -> None:
    grudge = ring_grudge(nodes_of(n), random.Random(1))
    expected = majorities_ring(nodes_of(n), random.Random(1))
    assert views(nodes_of(n), grudge) == expected


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", range(20))
def test_bridge_joins_two_halves_through_one_node(n: int, seed: int) -> None:
    bridge, grudge = bridge_grudge(nodes_of(n), random.Random(seed))
    seen = views(nodes_of(n), grudge)
    assert seen[bridge] == frozenset(nodes_of(n))
    others = [x for x in nodes_of(n) if x != bridge]
    sides = {seen[x] - {bridge} for x in others}
    assert len(sides) == 2  # two halves
    left, right = sides
    assert not left & right and left | right | {bridge} == set(nodes_of(n))
    assert abs(len(left) - len(right)) <= 1
    for x in others:
        assert bridge in seen[x]
    for a in nodes_of(n):  # the cut is symmetric
        for b in nodes_of(n):
            assert (b in seen[a]) == (a in seen[b])


def test_isolation_groups_put_each_isolated_node_alone() -> None:
    assert isolation_groups(nodes_of(5), {2}) == [{2}, {1, 3, 4, 5}]
    assert isolation_groups(nodes_of(5), {4, 1}) == [{1}, {4}, {2, 3, 5}]
    assert isolation_groups(nodes_of(3), {1, 2, 3}) == [{1}, {2}, {3}]
    with pytest.raises(ValueError, match="unknown"):
        isolation_groups(nodes_of(3), {9})


def test_complete_grudge_cuts_both_ways_and_rejects_overlap() -> None:
    grudge = complete_grudge([{1}, {2, 3}])
    assert grudge == {1: {2, 3}, 2: {1}, 3: {1}}
    with pytest.raises(ValueError, match="overlap"):
        complete_grudge([{1, 2}, {2, 3}])


@pytest.mark.parametrize("n", SIZES)
def test_too_few_nodes_are_refused(n: int) -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError):
        majorities_ring([1, 2], rng)
    with pytest.raises(ValueError):
        bridge_grudge([1, 2], rng)
    with pytest.raises(ValueError):
        random_halves([1], rng)


@given(n=st.integers(3, 9), seed=st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_partition_choices_hold_for_any_size(n: int, seed: int) -> None:
    nodes = nodes_of(n)
    ring = majorities_ring(nodes, random.Random(seed))
    assert all(is_majority(v, n) for v in ring.values())
    assert len(set(ring.values())) == n
    small, large = random_halves(nodes, random.Random(seed))
    assert small | large == set(nodes) and not small & large and len(small) <= len(large)
    bridge, grudge = bridge_grudge(nodes, random.Random(seed))
    assert not grudge[bridge]


# ---- cut sets ----------------------------------------------------------------------------------


def test_cuts_for_groups_match_the_complete_grudge() -> None:
    """The cluster's (sender, receiver) cuts are the grudge turned around."""
    groups = [{1, 2}, {3}]
    cuts = cuts_for_groups(nodes_of(5), groups)  # 4, 5 form an implicit third group
    grudge = complete_grudge([{1, 2}, {3}, {4, 5}])
    assert cuts == {(s, r) for r, senders in grudge.items() for s in senders}
    assert cuts_for_groups(nodes_of(3), [{1}]) == {(1, 2), (1, 3), (2, 1), (3, 1)}
    with pytest.raises(ValueError, match="overlap"):
        cuts_for_groups(nodes_of(3), [{1, 2}, {2}])
    with pytest.raises(ValueError, match="unknown"):
        cuts_for_groups(nodes_of(3), [{4}])


def test_cuts_for_grudge_turn_each_grudge_around() -> None:
    """(sender, receiver) for every sender a receiver drops; a grudge against oneself is no cut."""
    assert cuts_for_grudge(nodes_of(3), {1: {2, 3}, 2: {1}}) == {(2, 1), (3, 1), (1, 2)}
    assert cuts_for_grudge(nodes_of(3), {1: {1}, 2: set()}) == set()
    with pytest.raises(ValueError, match="no node 4"):
        cuts_for_grudge(nodes_of(3), {4: {1}})
    with pytest.raises(ValueError, match="no node 9"):
        cuts_for_grudge(nodes_of(3), {1: {9}})


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", range(10))
def test_one_way_shapes_cut_exactly_what_their_grudge_says(n: int, seed: int) -> None:
    """A ring's and a bridge's cuts leave each node hearing exactly its view, and a symmetric
    grudge (every shape but the 3-node ring) gives symmetric cuts."""
    nodes = nodes_of(n)
    _, bridge = bridge_grudge(nodes, random.Random(seed))
    for grudge in (ring_grudge(nodes, random.Random(seed)), bridge):
        cuts = cuts_for_grudge(nodes, grudge)
        heard = {r: {s for s in nodes if (s, r) not in cuts} for r in nodes}
        assert heard == views(nodes, grudge)
    bridge_cuts = cuts_for_grudge(nodes, bridge)
    assert all((b, a) in bridge_cuts for a, b in bridge_cuts)
