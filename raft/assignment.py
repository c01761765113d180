"""Replica assignment for new topics: spread replicas and leaders evenly, and across racks.

A pure function of the live brokers and the current load. It follows Kafka's
``AdminUtils.assignReplicasToBrokers``: brokers are ordered so that consecutive entries alternate
racks (``rack_alternated``), partition p's first replica (its preferred leader) is entry
``start + p``, and the followers are taken at a shift that grows every ``n`` partitions, so that
followers of one leader do not all land on the same neighbour.

Worked example: brokers 1, 2, 3 (no racks), 6 partitions, RF 2, start 0 →
``[1,2] [2,3] [3,1] [1,3] [2,1] [3,2]`` — every broker leads 2 partitions and holds 4 replicas.
With racks ``{1: a, 2: a, 3: b, 4: b}`` the order is ``1 3 2 4``, so each partition's two replicas
sit in different racks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["AssignmentError", "assign_replicas", "drain_plan", "rack_alternated"]


class AssignmentError(ValueError):
    """Too few brokers for the replication factor, or nonsense counts."""


def rack_alternated(brokers: Mapping[int, str | None]) -> list[int]:
    """Broker ids ordered so that consecutive ones are in different racks where possible.

    Without racks (every rack None) this is the sorted ids.
    """
    racks: dict[str | None, list[int]] = {}
    for broker_id in sorted(brokers):
        racks.setdefault(brokers[broker_id], []).append(broker_id)
    if len(racks) <= 1:
        return sorted(brokers)
    ordered_racks = sorted(racks, key=lambda r: "" if r is None else r)
    out: list[int] = []
    depth = max(len(v) for v in racks.values())
    for i in range(depth):
        for rack in ordered_racks:
            members = racks[rack]
            if i < len(members):
                out.append(members[i])
    return out


def assign_replicas(
    brokers: Mapping[int, str | None],
    partitions: int,
    replication_factor: int,
    *,
    leader_counts: Mapping[int, int] | None = None,
) -> list[tuple[int, ...]]:
    """Replica lists for ``partitions`` new partitions over ``brokers`` (id → rack).

    ``leader_counts`` (preferred leaderships each broker already holds) picks the starting
    broker, so successive topics do not all put their partition 0 on the same broker.
    """
    if partitions < 1:
        raise AssignmentError("a topic needs at least one partition")
    if replication_factor < 1:
        raise AssignmentError("the replication factor must be at least 1")
    if replication_factor > len(brokers):
        raise AssignmentError(
            f"replication factor {replication_factor} is larger than the "
            f"{len(brokers)} available broker(s)"
        )
    order = rack_alternated(brokers)
    n = len(order)
    counts = leader_counts or {}
    start = min(range(n), key=lambda i: (counts.get(order[i], 0), i))
    result: list[tuple[int, ...]] = []
    for p in range(partitions):
        first = (start + p) % n
        shift = (p // n) % max(n - 1, 1)
        replicas = [order[first]]
        # the other brokers in shifted order; pick greedily so each new replica is in a rack
        # not used yet by this partition (once every rack is used, start over), like Kafka
        candidates = [order[(first + 1 + (shift + j) % (n - 1)) % n] for j in range(n - 1)]
        used_racks = {brokers[order[first]]}
        while len(replicas) < replication_factor:
            if all(brokers[c] in used_racks for c in candidates if c not in replicas):
                used_racks = set()
            pick = next(c for c in candidates if c not in replicas and brokers[c] not in used_racks)
            replicas.append(pick)
            used_racks.add(brokers[pick])
        result.append(tuple(replicas))
    return result


def drain_plan(
    replica_lists: Iterable[tuple[str, int, tuple[int, ...]]],
    brokers: Mapping[int, str | None],
    drained: int,
    held: Mapping[int, int],
) -> tuple[list[tuple[str, int, tuple[int, ...]]], list[tuple[str, int]]]:
    """Target replica lists that take ``drained`` out of every list it is in.

    ``replica_lists``: (topic, partition, replicas) of every partition (replicas as they will
    be: a target in progress counts); ``brokers``: the live brokers that may take replicas (id →
    rack), ``drained`` excluded by the caller or not; ``held``: replicas each broker holds now.
    The drained broker's place goes to the broker holding the fewest replicas among those not
    already in the list, preferring one in a rack the list does not use yet, and the lowest id
    on a tie; it is appended, so the first replica (the next preferred leader) is one that is in
    sync already. Returns (moves, partitions no broker could take).

    Worked example: lists ``t-0: (1, 2)``, ``t-1: (2, 3)``, brokers 1-4 holding 1, 2, 1, 0,
    drain 2 → ``t-0: (1, 4)`` (4 holds nothing), ``t-1: (3, 1)`` (4 holds one now, 1 holds one).
    """
    load = dict(held)
    moves: list[tuple[str, int, tuple[int, ...]]] = []
    stuck: list[tuple[str, int]] = []
    for topic, partition, replicas in replica_lists:
        if drained not in replicas:
            continue
        staying = tuple(b for b in replicas if b != drained)
        racks = {brokers.get(b) for b in staying}
        candidates = [b for b in brokers if b != drained and b not in replicas]
        if not candidates:
            stuck.append((topic, partition))
            continue
        pick = min(
            candidates,
            key=lambda b: (brokers[b] in racks and brokers[b] is not None, load.get(b, 0), b),
        )
        load[pick] = load.get(pick, 0) + 1
        moves.append((topic, partition, (*staying, pick)))
    return moves, stuck
