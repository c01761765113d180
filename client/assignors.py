"""Partition assignors, run by the group leader: range, round-robin and sticky. Pure.

A member's subscription and assignment travel through the coordinator as opaque bytes (cbor2)::

    subscription  {"topics": ["orders", ...], "owned": [["orders", 0], ...]}
    assignment    {"partitions": [["orders", 0], ...]}

``owned`` is what the member held before the rebalance (the sticky assignor keeps it where it can).
Worked example, range: members a, b subscribed to t with 5 partitions → a: t-0, t-1, t-2;
b: t-3, t-4 (the first members get one extra). Round-robin over the same → a: 0, 2, 4; b: 1, 3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cbor2

__all__ = [
    "ASSIGNORS",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "range_assign",
    "roundrobin_assign",
    "sticky_assign",
]

TopicPartition = tuple[str, int]
Assignment = dict[str, list[TopicPartition]]


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...]
    owned: tuple[TopicPartition, ...] = ()


def encode_subscription(subscription: Subscription) -> bytes:
    return bytes(
        cbor2.dumps(
            {"topics": list(subscription.topics), "owned": [list(tp) for tp in subscription.owned]}
        )
    )


def decode_subscription(data: bytes) -> Subscription:
    try:
        body = cbor2.loads(data) if data else {}
        return Subscription(
            tuple(str(t) for t in body.get("topics", ())),
            tuple((str(t), int(p)) for t, p in body.get("owned", ())),
        )
    except Exception:  # another client's garbage: treat it as subscribing to nothing
        return Subscription(())


def encode_assignment(partitions: Sequence[TopicPartition]) -> bytes:
    return bytes(cbor2.dumps({"partitions": [list(tp) for tp in sorted(partitions)]}))


def decode_assignment(data: bytes) -> list[TopicPartition]:
    if not data:
        return []
    body = cbor2.loads(data)
    return [(str(t), int(p)) for t, p in body.get("partitions", ())]


def _subscribers(
    subscriptions: Mapping[str, Subscription], counts: Mapping[str, int]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for member in sorted(subscriptions):
        for topic in subscriptions[member].topics:
            if topic in counts:
                out.setdefault(topic, []).append(member)
    return out


def range_assign(
    subscriptions: Mapping[str, Subscription], counts: Mapping[str, int]
) -> Assignment:
    """Per topic, contiguous ranges of partitions in member order."""
    result: Assignment = {m: [] for m in subscriptions}
    for topic, members in sorted(_subscribers(subscriptions, counts).items()):
        n, k = counts[topic], len(members)
        start = 0
        for i, member in enumerate(members):
            size = n // k + (1 if i < n % k else 0)
            result[member].extend((topic, p) for p in range(start, start + size))
            start += size
    return result


def roundrobin_assign(
    subscriptions: Mapping[str, Subscription], counts: Mapping[str, int]
) -> Assignment:
    """All partitions in order, dealt to the members that subscribe to each topic in turn."""
    result: Assignment = {m: [] for m in subscriptions}
    subscribers = _subscribers(subscriptions, counts)
    members = sorted(subscriptions)
    if not members:
        return result
    turn = 0
    for topic in sorted(subscribers):
        for p in range(counts[topic]):
            for _ in range(len(members)):
                member = members[turn % len(members)]
                turn += 1
                if member in subscribers[topic]:
                    result[member].append((topic, p))
                    break
    return result


def sticky_assign(
    subscriptions: Mapping[str, Subscription], counts: Mapping[str, int]
) -> Assignment:
    """Balanced like round-robin, but every member keeps what it owned where balance allows."""
    result: Assignment = {m: [] for m in subscriptions}
    subscribers = _subscribers(subscriptions, counts)
    everything = [(t, p) for t in sorted(subscribers) for p in range(counts[t])]
    if not result:
        return result
    # keep owned partitions up to the floor share (at least 1), then deal the rest to the least
    # loaded: sizes then differ by at most one, like round-robin
    quota = max(1, len(everything) // len(result))
    taken: set[TopicPartition] = set()
    for member in sorted(result):
        for tp in subscriptions[member].owned:
            valid = tp[0] in subscribers and tp[1] < counts.get(tp[0], 0)
            keep = valid and member in subscribers[tp[0]] and tp not in taken
            if keep and len(result[member]) < quota:
                result[member].append(tp)
                taken.add(tp)
    for tp in everything:
        if tp in taken:
            continue
        member = min(subscribers[tp[0]], key=lambda m: (len(result[m]), m))
        result[member].append(tp)
        taken.add(tp)
    return result


ASSIGNORS: dict[str, Callable[[Mapping[str, Subscription], Mapping[str, int]], Assignment]] = {
    "sticky": sticky_assign,
    "range": range_assign,
    "roundrobin": roundrobin_assign,
}
