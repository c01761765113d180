"""When each fault of a chaos run starts and how long it lasts: the seeded schedule, pure.

``Schedule(seed, nemeses, ...)`` yields ``ScheduledFault(start_at_s, nemesis, duration_s)``
events — the same list for the same arguments, so a failing run is reproduced with its seed.
The schedule draws from its own ``Random(seed)``; the nemeses choose their nodes with
``nemesis_rng(seed)``, so changing one never shifts the other. What each named nemesis does is
nemesis.py's; which names a ``--nemesis`` list schedules, scenario.py's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .nemesis import NEMESIS_NAMES

__all__ = ["Schedule", "ScheduledFault", "nemesis_rng"]


class ScheduledFault(NamedTuple):
    start_at_s: float  # since the run started
    nemesis: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each fault starts and how long it lasts; pure and bounded.

    The first fault starts after one quiet interval; each next one a fresh interval after the
    previous one healed; none runs past ``time_limit_s``; at most ``events_max`` events.
    """

    seed: int
    nemeses: tuple[str, ...]
    interval_s: tuple[float, float] = (5.0, 10.0)  # quiet time before each fault (min, max)
    duration_s: tuple[float, float] = (5.0, 15.0)  # how long each fault lasts (min, max)
    time_limit_s: float = 60.0
    events_max: int = 1000

    def __post_init__(self) -> None:
        if not self.nemeses:
            raise ValueError("a schedule needs at least one nemesis")
        unknown = [n for n in self.nemeses if n not in NEMESIS_NAMES]
        if unknown:
            raise ValueError(f"unknown nemesis {unknown}; known: {', '.join(NEMESIS_NAMES)}")
        for name, (lo, hi) in (("interval_s", self.interval_s), ("duration_s", self.duration_s)):
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, not {lo, hi}")
        if self.time_limit_s <= 0 or self.events_max <= 0:
            raise ValueError("time_limit_s and events_max must be positive")

    def __iter__(self) -> Iterator[ScheduledFault]:
        rng = random.Random(self.seed)
        t = 0.0
        for _ in range(self.events_max):
            t += rng.uniform(*self.interval_s)
            duration = rng.uniform(*self.duration_s)
            name = rng.choice(self.nemeses)
            if t + duration > self.time_limit_s:
                return
            yield ScheduledFault(round(t, 3), name, round(duration, 3))
            t += duration

    def events(self) -> list[ScheduledFault]:
        return list(self)


def nemesis_rng(seed: int) -> random.Random:
    """The rng the nemeses choose nodes with: derived from the run's seed, apart from the
    schedule's, so one run's choices replay exactly."""
    return random.Random(f"raftlog-nemesis-{seed}")
