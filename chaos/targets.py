"""Which nodes a process or storage fault hits: pure choices from the candidates and an rng.

``choose_targets`` picks the nodes of a kill, a pause or a power loss (``Targets``: one, a
minority, a majority, all, the partition leaders). ``StorageRisk`` keeps the storage faults
(power loss, disk damage) inside the fault model the README states: it is told the
``Placement`` of the workload's partitions and says which of the wanted nodes may be hit now.
"""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Placement", "StorageRisk", "Targets", "choose_targets"]

# (replicas, isr) of every partition the workload uses; None when the metadata cannot be read
Placement = Sequence[tuple[tuple[int, ...], tuple[int, ...]]] | None


class Targets(Enum):
    """Which nodes a process fault (kill, pause) hits."""

    ONE = "one"
    MINORITY = "minority"  # a random minority, at least one
    MAJORITY = "majority"
    ALL = "all"
    LEADERS = "leaders"  # the partition leaders (none known: nothing to do)


def choose_targets(
    candidates: Sequence[int] | Set[int],
    targets: Targets,
    rng: random.Random,
    *,
    cluster_size: int,
    leaders: Set[int] = frozenset(),
) -> frozenset[int]:
    """The nodes to hit among ``candidates`` (e.g. the running ones); empty when none fit."""
    pool = sorted(set(candidates))
    if not pool:
        return frozenset()
    match targets:
        case Targets.ONE:
            count = 1
        case Targets.MINORITY:
            count = max(1, rng.randint(1, max(1, (cluster_size - 1) // 2)))
        case Targets.MAJORITY:
            count = cluster_size // 2 + 1
        case Targets.ALL:
            return frozenset(pool)
        case Targets.LEADERS:
            return frozenset(set(pool) & set(leaders))
    return frozenset(rng.sample(pool, min(count, len(pool))))


@dataclass(slots=True)
class StorageRisk:
    """Which nodes may still miss data after a power loss or a disk fault (shared by the storage
    nemeses of one run).

    The fault model (README, "Durability") holds power loss and damage of a *minority* of each
    partition's replicas, and of the voters, at any instant. A node's fault lasts beyond its
    reboot: its replicas may miss data until they are back in the ISR. So a storage fault is
    injected only when, counting the nodes still at risk, every partition keeps a majority of
    replicas that cannot have lost anything; otherwise it is skipped (and counted) — the harness
    tests the model it states, and a run that went outside it would prove nothing.
    """

    nodes: set[int] = field(default_factory=set)  # faulted, not yet back in every ISR
    skipped: int = 0  # faults not injected because they would leave the model

    def refresh(self, placement: Placement, powered_off: Set[int]) -> None:
        if placement is None:
            return
        for node in list(self.nodes):
            held = [isr for replicas, isr in placement if node in replicas]
            if node not in powered_off and all(node in isr for isr in held):
                self.nodes.discard(node)

    def allows(self, chosen: Set[int], placement: Placement, voters: int) -> bool:
        if placement is None:
            return False  # cannot tell: do not risk leaving the model
        at_risk = self.nodes | set(chosen)
        if len(at_risk) > (voters - 1) // 2:
            return False
        return all(
            len(at_risk & set(replicas)) <= (len(replicas) - 1) // 2 for replicas, _ in placement
        )

    def choose(
        self,
        wanted: Set[int],
        candidates: Sequence[int],
        placement: Placement,
        voters: int,
        rng: random.Random,
    ) -> frozenset[int]:
        """The largest part of ``wanted`` (then of the other candidates, up to as many) that
        keeps the model; empty when no node can be hit now."""
        chosen: set[int] = set()
        others = [n for n in candidates if n not in wanted]
        rng.shuffle(others)
        for node in [*sorted(wanted), *others]:
            if len(chosen) >= len(wanted):
                break
            if self.allows(chosen | {node}, placement, voters):
                chosen.add(node)
        if not chosen:
            self.skipped += 1
        return frozenset(chosen)
