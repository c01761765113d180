"""Availability of a chaos run, measured from its history as the checker measures safety.

Pure: a function of the history's acknowledged sends and the faults' start and heal times (both
in seconds since the workload started; ``time_ms`` / 1000 for ops). Two figures (issue 21):

* **Recovery after each heal**, per partition key: the time from the heal to the first
  acknowledgement on that key (an ``ok`` send *completing* after the heal, whenever it was
  invoked), within the window up to the next fault's start or the end of the workload. A key
  with no acknowledgement in its window has no recovery (``None``): it never came back while it
  was watched. A fault's figure is the maximum over keys (``None`` if any key never recovered).
* **The longest quiet stretch**: the longest interval with no acknowledgement on a key while no
  fault was in force (faults' own intervals are cut out), per key and over all keys.
* **Serving through a fault**: per fault and key, the longest gap between acknowledgements from
  the fault's start to its heal (start and heal included). Which keys *can* serve depends on the
  cut (a leader must reach a Raft majority and ``min.insync.replicas`` replicas), so the figure
  is reported, per fault kind, as how many (fault, key) pairs never went ``SERVING_GAP_S``
  without an acknowledgement.

Worked example: one key, a partition from 10 s to 15 s, acks every 0.1 s up to 9.9 s, one at
15.4 s, then every 0.1 s from 16 s to 20 s, the end of the run: recovery 0.4 s; the quiet
stretches with no fault in force are at most 0.1 s before the fault, 15–15.4 s (0.4 s: the
fault's own interval is cut out) and 15.4–16 s (0.6 s), so the longest is 0.6 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from raftlog.client.stats import percentile

from .history import Op, OpF, OpType

__all__ = ["SERVING_GAP_S", "Availability", "FaultRecovery", "QuietStretch", "availability"]

SERVING_GAP_S = 2.0  # a key that never went this long without an ack kept serving (issue 21)


@dataclass(frozen=True, slots=True)
class FaultRecovery:
    name: str
    start_s: float
    heal_s: float
    window_s: float  # how long after the heal it was watched (to the next fault or the end)
    per_key: dict[str, float | None]  # seconds from the heal to the key's first ack; None: none
    # the longest gap between acks from the fault's start to its heal, per key
    gap_during_per_key: dict[str, float] = field(default_factory=dict)

    @property
    def max_s(self) -> float | None:
        values = list(self.per_key.values())
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start_s": round(self.start_s, 3),
            "heal_s": round(self.heal_s, 3),
            "window_s": round(self.window_s, 3),
            "max_s": None if self.max_s is None else round(self.max_s, 3),
            "per_key": {k: None if v is None else round(v, 3) for k, v in self.per_key.items()},
            "gap_during_per_key": {k: round(v, 3) for k, v in self.gap_during_per_key.items()},
        }


@dataclass(frozen=True, slots=True)
class QuietStretch:
    key: str
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "length_s": round(self.length_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Availability:
    recoveries: tuple[FaultRecovery, ...]
    longest_quiet: QuietStretch | None  # over every key
    longest_quiet_per_key: dict[str, QuietStretch]

    @property
    def worst_recovery_s(self) -> float | None:
        """The largest recovery over every heal; None when some key never recovered."""
        values = [r.max_s for r in self.recoveries]
        if any(v is None for v in values):
            return None
        return max((v for v in values if v is not None), default=0.0)

    def recovery_percentile_s(self, q: float) -> float | None:
        """The ``q``-th percentile (q in (0, 100], nearest rank) of every key's recovery over
        every heal; None when none recovered."""
        values = sorted(v for r in self.recoveries for v in r.per_key.values() if v is not None)
        return percentile(values, q) if values else None

    def unrecovered(self) -> list[FaultRecovery]:
        return [r for r in self.recoveries if r.max_s is None]

    def stretches(self, min_s: float = 0.2) -> list[tuple[float, float, str]]:
        """What a timeline marks: (start, end, label) for each heal's wait for the last key's
        first ack (to the end of its window when some key never acked) and for each key's
        longest silence with no fault active, when at least ``min_s`` long."""
        out = []
        for r in self.recoveries:
            waited = r.window_s if r.max_s is None else r.max_s
            if waited >= min_s:
                label = "no ack after a heal" if r.max_s is not None else "never recovered"
                out.append((r.heal_s, r.heal_s + waited, label))
        for quiet in self.longest_quiet_per_key.values():
            if quiet.length_s >= min_s:
                out.append((quiet.start_s, quiet.end_s, "silence, no fault"))
        return sorted(out)

    def serving_by_kind(self) -> dict[str, dict[str, int]]:
        """Per fault kind: faults, (fault, key) pairs, and pairs that never went
        ``SERVING_GAP_S`` without an ack while the fault was in force."""
        out: dict[str, dict[str, int]] = {}
        for r in self.recoveries:
            kind = out.setdefault(r.name, {"faults": 0, "keys": 0, "kept_serving": 0})
            kind["faults"] += 1
            kind["keys"] += len(r.gap_during_per_key)
            kind["kept_serving"] += sum(g < SERVING_GAP_S for g in r.gap_during_per_key.values())
        return out

    def to_json(self) -> dict[str, Any]:
        worst = self.worst_recovery_s
        p99 = self.recovery_percentile_s(99)
        return {
            "heals": len(self.recoveries),
            "unrecovered_heals": len(self.unrecovered()),
            "worst_recovery_s": None if worst is None else round(worst, 3),
            "p99_recovery_s": None if p99 is None else round(p99, 3),
            "serving_during_faults": self.serving_by_kind(),
            "recoveries": [r.to_json() for r in self.recoveries],
            "longest_quiet_without_fault": (
                None if self.longest_quiet is None else self.longest_quiet.to_json()
            ),
            "longest_quiet_per_key": {
                k: v.to_json() for k, v in self.longest_quiet_per_key.items()
            },
        }


def _acks(ops: Iterable[Op]) -> dict[str, list[float]]:
    """Completion times (s) of acknowledged sends, per key, in order."""
    out: dict[str, list[float]] = {}
    for op in ops:
        if op.f == OpF.SEND and op.type == OpType.OK and isinstance(op.value, Mapping):
            key = op.value.get("key")
            if isinstance(key, str):
                out.setdefault(key, []).append(op.time_ms / 1000)
    for times in out.values():
        times.sort()
    return out


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _quiet(
    key: str, acks: list[float], faulty: list[tuple[float, float]], end_s: float
) -> QuietStretch | None:
    """The longest stretch between consecutive acks (run start and end included) with no fault."""
    best: QuietStretch | None = None
    marks = [0.0, *acks, end_s]
    for a, b in pairwise(marks):
        cursor = a
        for f_start, f_end in faulty:  # the no-fault pieces of (a, b)
            if f_end <= cursor or f_start >= b:
                continue
            if f_start > cursor and (best is None or f_start - cursor > best.length_s):
                best = QuietStretch(key, cursor, f_start)
            cursor = max(cursor, f_end)
        if b > cursor and (best is None or b - cursor > best.length_s):
            best = QuietStretch(key, cursor, b)
    return best


def availability(
    ops: Sequence[Op],
    faults: Iterable[tuple[str, float, float | None]],
    keys: Iterable[str],
    end_s: float,
) -> Availability:
    """``faults``: (name, start_s, heal_s or None if never healed); ``keys``: every partition
    key the workload wrote; ``end_s``: when the workload stopped."""
    acks = _acks(ops)
    keys = sorted(set(keys) | set(acks))
    ordered = sorted(faults, key=lambda f: f[1])
    starts = [f[1] for f in ordered]
    recoveries = []
    for name, start, heal in ordered:
        if heal is None or heal > end_s:
            continue
        window_end = min([s for s in starts if s > heal] + [end_s])
        per_key: dict[str, float | None] = {}
        gaps: dict[str, float] = {}
        for key in keys:
            times = acks.get(key, [])
            first = next((t for t in times if t >= heal), None)
            per_key[key] = None if first is None or first > window_end else first - heal
            during = [start, *(t for t in times if start < t < heal), heal]
            gaps[key] = max(b - a for a, b in pairwise(during))
        recoveries.append(FaultRecovery(name, start, heal, window_end - heal, per_key, gaps))
    faulty = _merge((s, end_s if h is None else h) for _, s, h in ordered)
    per_key_quiet = {
        key: q for key in keys if (q := _quiet(key, acks.get(key, []), faulty, end_s)) is not None
    }
    longest = max(per_key_quiet.values(), key=lambda q: q.length_s, default=None)
    return Availability(tuple(recoveries), longest, per_key_quiet)
