"""Partition assignors, run by the group leader: range, round-robin, sticky and cooperative-sticky.
Pure.

A member's subscription and assignment travel through the coordinator as opaque bytes (cbor2)::

    subscription  {"topics": ["orders", ...], "owned": [["orders", 0], ...]}
    assignment    {"partitions": [["orders", 0], ...]}

``owned`` is what the member held before the rebalance (the sticky assignor keeps it where it can;
for a cooperative member it is what it still holds, and keeps consuming, during the rebalance).
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
    "cooperative_sticky_assign",
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
    """Balanced like round-robin, but every member keeps what it owned where balance allows.

    Stable: a balanced assignment given back as ``owned`` comes out unchanged (so a cooperative
    rebalance converges instead of moving a partition every round).
    """
    result: Assignment = {m: [] for m in subscriptions}
    subscribers = _subscribers(subscriptions, counts)
    everything = [(t, p) for t in sorted(subscribers) for p in range(counts[t])]
    if not result:
        return result
    # sizes end up floor or floor + 1, with exactly `extra` members at floor + 1: keep owned
    # partitions up to floor, then let the members with more owned ones keep one extra each
    floor, extra = divmod(len(everything), len(result))
    taken: set[TopicPartition] = set()
    keepable: dict[str, list[TopicPartition]] = {}
    for member in sorted(result):
        keepable[member] = []
        for tp in subscriptions[member].owned:
            valid = tp[0] in subscribers and tp[1] < counts.get(tp[0], 0)
            if valid and member in subscribers[tp[0]] and tp not in taken:
                keepable[member].append(tp)
                taken.add(tp)
    for member in sorted(result):
        result[member] = keepable[member][:floor]
    for member in sorted(result, key=lambda m: (-len(keepable[m]), m)):
        if extra and len(keepable[member]) > floor:
            result[member].append(keepable[member][floor])
            extra -= 1
    taken = {tp for parts in result.values() for tp in parts}
    for tp in everything:
        if tp in taken:
            continue
        member = min(subscribers[tp[0]], key=lambda m: (len(result[m]), m))
        result[member].append(tp)
        taken.add(tp)
    return result


def cooperative_sticky_assign(
    subscriptions: Mapping[str, Subscription], counts: Mapping[str, int]
) -> Assignment:
    """Kafka's incremental cooperative rebalancing (KIP-429): sticky's target, except that a
    partition still owned by another member is given to nobody this round. Its owner is not
    assigned it either, so it revokes it and asks for another round; that round hands it over.
    Partitions that stay put are never revoked, so they never stop.

    Worked example: a owns t-0..t-5, b joins. Sticky's target: a t-0..t-2, b t-3..t-5. Round 1
    gives a t-0..t-2 (it revokes t-3..t-5, keeps consuming t-0..t-2) and b nothing; round 2 (a no
    longer claims t-3..t-5) gives b t-3..t-5.
    """
    target = sticky_assign(subscriptions, counts)
    claimed: dict[TopicPartition, set[str]] = {}
    for member, subscription in subscriptions.items():
        for tp in subscription.owned:
            claimed.setdefault(tp, set()).add(member)
    return {
        member: [tp for tp in tps if tp not in claimed or member in claimed[tp]]
        for member, tps in target.items()
    }


ASSIGNORS: dict[str, Callable[[Mapping[str, Subscription], Mapping[str, int]], Assignment]] = {
    "sticky": sticky_assign,
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "cooperative-sticky": cooperative_sticky_assign,
}
# assignors whose members keep their partitions through a rebalance (KIP-429); a consumer is
# cooperative when every assignor it names is, as Kafka's is
COOPERATIVE = frozenset({"cooperative-sticky"})
