"""Assignors: everything assigned once, balanced, and sticky where they say so."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftlog.client.assignors import (
    ASSIGNORS,
    Subscription,
    cooperative_sticky_assign,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)


def test_the_worked_examples() -> None:
    subs = {"a": Subscription(("t",)), "b": Subscription(("t",))}
    assert range_assign(subs, {"t": 5}) == {"a": [("t", 0), ("t", 1), ("t", 2)],
                                            "b": [("t", 3), ("t", 4)]}  # fmt: skip
    assert roundrobin_assign(subs, {"t": 5}) == {"a": [("t", 0), ("t", 2), ("t", 4)],
                                                 "b": [("t", 1), ("t", 3)]}  # fmt: skip


def test_codecs_round_trip_and_garbage_subscribes_to_nothing() -> None:
    sub = Subscription(("a", "b"), (("a", 1),))
    assert decode_subscription(encode_subscription(sub)) == sub
    assert decode_subscription(b"\xff\x00") == Subscription(())
    assert decode_assignment(encode_assignment([("b", 2), ("a", 0)])) == [("a", 0), ("b", 2)]


@given(
    members=st.integers(1, 6),
    topics=st.dictionaries(st.sampled_from("xyz"), st.integers(1, 12), min_size=1),
    name=st.sampled_from(sorted(ASSIGNORS)),
)
def test_every_partition_exactly_once_to_a_subscriber(
    members: int, topics: dict[str, int], name: str
) -> None:
    subs = {f"m{i}": Subscription(tuple(sorted(topics))) for i in range(members)}
    result = ASSIGNORS[name](subs, topics)
    given_out = [tp for parts in result.values() for tp in parts]
    assert sorted(given_out) == sorted((t, p) for t, n in topics.items() for p in range(n))
    if name != "range":  # range balances per topic; the others over everything
        sizes = [len(v) for v in result.values()]
        assert max(sizes) - min(sizes) <= 1


def test_sticky_keeps_what_members_owned_when_one_leaves() -> None:
    three = {m: Subscription(("t",)) for m in "abc"}
    first = sticky_assign(three, {"t": 6})
    two = {m: Subscription(("t",), tuple(first[m])) for m in "ab"}
    second = sticky_assign(two, {"t": 6})
    for m in "ab":
        assert set(first[m]) <= set(second[m])  # nothing moved but c's partitions
    assert sorted(second["a"] + second["b"]) == [("t", p) for p in range(6)]


def test_cooperative_worked_example_hands_partitions_over_in_two_rounds() -> None:
    a_owns = tuple(("t", p) for p in range(6))
    first = cooperative_sticky_assign(
        {"a": Subscription(("t",), a_owns), "b": Subscription(("t",))}, {"t": 6}
    )
    assert first == {"a": [("t", 0), ("t", 1), ("t", 2)], "b": []}  # a revokes 3-5 first
    second = cooperative_sticky_assign(
        {"a": Subscription(("t",), tuple(first["a"])), "b": Subscription(("t",))}, {"t": 6}
    )
    assert second == {"a": [("t", 0), ("t", 1), ("t", 2)], "b": [("t", 3), ("t", 4), ("t", 5)]}


@given(
    members=st.integers(1, 5),
    partitions=st.integers(1, 12),
    owners=st.lists(st.integers(-1, 6), min_size=12, max_size=12),
)
def test_cooperative_never_gives_away_a_partition_its_owner_still_holds(
    members: int, partitions: int, owners: list[int]
) -> None:
    """Whatever members claim, no partition goes to a member other than one claiming it, nothing
    is given twice, and once every claim is honoured (the owners revoked what they lost) the next
    round gives out everything, balanced."""
    names = [f"m{i}" for i in range(members)]
    owned: dict[str, list[tuple[str, int]]] = {m: [] for m in names}
    for p in range(partitions):
        if 0 <= owners[p] < members:
            owned[names[owners[p]]].append(("t", p))
    subs = {m: Subscription(("t",), tuple(owned[m])) for m in names}
    first = cooperative_sticky_assign(subs, {"t": partitions})
    given_out = [tp for parts in first.values() for tp in parts]
    assert len(given_out) == len(set(given_out))
    for member, parts in first.items():
        for tp in parts:
            claimants = [m for m in names if tp in owned[m]]
            assert not claimants or member in claimants
    # the owners drop what they were not given; the next round completes the hand-over
    kept = {m: Subscription(("t",), tuple(first[m])) for m in names}
    second = cooperative_sticky_assign(kept, {"t": partitions})
    assert sorted(tp for parts in second.values() for tp in parts) == [
        ("t", p) for p in range(partitions)
    ]
    sizes = [len(v) for v in second.values()]
    assert max(sizes) - min(sizes) <= 1
    for m in names:
        assert set(first[m]) <= set(second[m])  # nothing kept in round 1 moves in round 2


@given(members=st.integers(1, 6), partitions=st.integers(1, 20))
def test_sticky_is_stable_on_its_own_balanced_output(members: int, partitions: int) -> None:
    subs = {f"m{i}": Subscription(("t",)) for i in range(members)}
    first = sticky_assign(subs, {"t": partitions})
    again = sticky_assign(
        {m: Subscription(("t",), tuple(parts)) for m, parts in first.items()}, {"t": partitions}
    )
    assert again == first
