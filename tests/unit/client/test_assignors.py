"""Assignors: everything assigned once, balanced, and sticky where they say so."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftlog.client.assignors import (
    ASSIGNORS,
    Subscription,
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
