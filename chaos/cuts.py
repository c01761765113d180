"""Partition shapes as cut sets: which links a network partition cuts. Pure functions of node
ids (and a ``random.Random`` where the shape is drawn).

Two ways to say the same thing:

- a *grudge* is Jepsen's: node → the nodes whose packets it drops. The partition nemeses
  (nemesis.py) choose their shape as a grudge: ``random_halves``, ``isolation_groups``
  (turned into a grudge by ``complete_grudge``), ``ring_grudge`` (from ``majorities_ring``),
  ``bridge_grudge``.
- a *cut* ``(a, b)`` means packets from a to b are stopped: one direction of one link, which
  ``NetnsCluster`` makes a route in a's namespace (network.py). ``cuts_for_groups`` and
  ``cuts_for_grudge`` turn groups and grudges into the set of cuts to put in force.

Example, 3 nodes, node 1 isolated: the groups ``[{1}]`` (the others form a group of their
own) give the grudge ``{1: {2, 3}, 2: {1}, 3: {1}}`` and the cuts
``{(1, 2), (1, 3), (2, 1), (3, 1)}``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence, Set

__all__ = [
    "Grudge",
    "bridge_grudge",
    "complete_grudge",
    "cuts_for_groups",
    "cuts_for_grudge",
    "isolation_groups",
    "majorities_ring",
    "random_halves",
    "ring_grudge",
    "views",
]

Grudge = Mapping[int, frozenset[int]]  # node → nodes whose packets it drops (Jepsen's grudge)


def _majority(n: int) -> int:
    return n // 2 + 1


def _sorted_nodes(nodes: Sequence[int] | Set[int]) -> list[int]:
    out = sorted(set(nodes))
    if not out:
        raise ValueError("a fault needs at least one node")
    return out


# ---- shapes, as grudges ------------------------------------------------------------------------


def complete_grudge(groups: Sequence[Set[int]]) -> dict[int, frozenset[int]]:
    """Every node drops packets from every node outside its own group (both directions cut)."""
    everyone = frozenset(n for g in groups for n in g)
    if sum(len(g) for g in groups) != len(everyone):
        raise ValueError(f"groups overlap: {[sorted(g) for g in groups]}")
    return {n: everyone - frozenset(g) for g in groups for n in g}


def views(nodes: Sequence[int] | Set[int], grudge: Grudge) -> dict[int, frozenset[int]]:
    """node → the nodes it hears from (itself included) under ``grudge``."""
    everyone = frozenset(nodes)
    return {n: everyone - grudge.get(n, frozenset()) for n in everyone}


def random_halves(nodes: Sequence[int] | Set[int], rng: random.Random) -> list[frozenset[int]]:
    """Shuffled, then cut in two: ``[smaller half, larger half]`` (Jepsen's bisect)."""
    order = _sorted_nodes(nodes)
    if len(order) < 2:
        raise ValueError("halves need at least two nodes")
    rng.shuffle(order)
    cut = len(order) // 2
    return [frozenset(order[:cut]), frozenset(order[cut:])]


def isolation_groups(nodes: Sequence[int] | Set[int], isolated: Set[int]) -> list[frozenset[int]]:
    """Each isolated node alone, the others together (Jepsen's :primaries partition)."""
    everyone = _sorted_nodes(nodes)
    unknown = set(isolated) - set(everyone)
    if unknown:
        raise ValueError(f"cannot isolate unknown node(s) {sorted(unknown)}")
    groups = [frozenset({n}) for n in sorted(isolated)]
    rest = frozenset(everyone) - frozenset(isolated)
    if rest:
        groups.append(rest)
    return groups


def majorities_ring(
    nodes: Sequence[int] | Set[int], rng: random.Random
) -> dict[int, frozenset[int]]:
    """node → the majority it sees: every view is a majority and no two views are equal.

    Jepsen's perfect ring: shuffle the nodes into a ring, take each window of ``m`` (majority)
    consecutive nodes, and give the window to its middle node. With 5 nodes each node sees its
    two ring neighbours, which see it back (a symmetric cut). With 3 nodes no symmetric answer
    exists: a sees b but b does not see a, so every pair loses one direction — for TCP that is
    every link broken. Use it with 5 nodes.
    """
    order = _sorted_nodes(nodes)
    n = len(order)
    if n < 3:
        raise ValueError("a majorities ring needs at least three nodes")
    rng.shuffle(order)
    m = _majority(n)
    out = {}
    for start in range(n):
        window = [order[(start + k) % n] for k in range(m)]
        out[window[m // 2]] = frozenset(window)
    return out


def ring_grudge(nodes: Sequence[int] | Set[int], rng: random.Random) -> dict[int, frozenset[int]]:
    everyone = frozenset(nodes)
    return {n: everyone - seen for n, seen in majorities_ring(nodes, rng).items()}


def bridge_grudge(
    nodes: Sequence[int] | Set[int], rng: random.Random
) -> tuple[int, dict[int, frozenset[int]]]:
    """(bridge node, grudge): two halves that cannot talk, and one node that talks to both."""
    order = _sorted_nodes(nodes)
    if len(order) < 3:
        raise ValueError("a bridge needs at least three nodes")
    rng.shuffle(order)
    half = (len(order) - 1) // 2
    left, bridge, right = frozenset(order[:half]), order[half], frozenset(order[half + 1 :])
    grudge = {n: right for n in left} | {n: left for n in right} | {bridge: frozenset()}
    return bridge, grudge


# ---- cut sets ----------------------------------------------------------------------------------


def cuts_for_groups(nodes: Sequence[int], groups: Sequence[Set[int]]) -> set[tuple[int, int]]:
    """Both-direction cuts between every pair of nodes in different groups.

    Groups must be disjoint and name known nodes; nodes named in no group form one more group
    together (so ``[{1}]`` isolates node 1)."""
    seen: set[int] = set()
    components: list[set[int]] = []
    for group in groups:
        group = set(group)
        unknown = group - set(nodes)
        if unknown:
            raise ValueError(f"unknown node(s) {sorted(unknown)} in partition groups")
        if group & seen:
            raise ValueError(f"partition groups overlap on {sorted(group & seen)}")
        seen |= group
        if group:
            components.append(group)
    rest = set(nodes) - seen
    if rest:
        components.append(rest)
    component_of = {n: i for i, c in enumerate(components) for n in c}
    return {(a, b) for a in nodes for b in nodes if component_of[a] != component_of[b]}


def cuts_for_grudge(
    nodes: Sequence[int], grudge: Mapping[int, Iterable[int]]
) -> set[tuple[int, int]]:
    """The one-way cuts of a grudge: ``(sender, receiver)`` for every sender a receiver drops
    (a node's grudge against itself is ignored). Unknown nodes raise ValueError."""
    known = list(nodes)

    def require(node: int) -> None:
        if node not in known:
            raise ValueError(f"no node {node} (nodes: {known})")

    cuts = set()
    for receiver, senders in grudge.items():
        require(receiver)
        for sender in senders:
            require(sender)
            if sender != receiver:
                cuts.add((sender, receiver))
    return cuts
