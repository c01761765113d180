"""Summary statistics of samples: the repository's one percentile definition, and the latency
summary the perf tool (``raftlog bench``) and ``make bench`` report.

Pure: no IO. The percentile is *nearest rank* — always one of the samples, never an
interpolation between two — so a p99 of 990 ms means one sample took 990 ms. Every figure
called p50/p95/p99 in the repository is computed here: the perf tool's and ``make bench``'s
latencies, the chaos report's acknowledgement latencies and recovery times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LatencySummary", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values``: the smallest value with at least
    ``q`` percent of the values at or below it (q in (0, 100]); NaN when there are none.

    Worked example: of [1, 2, 3, 4] the 50th is 2, the 75th 3, the 99th 4.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], not {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = math.ceil(q / 100 * n - 1e-9)  # the epsilon keeps 0.999 * 1000 at 999
    return float(sorted_values[max(rank, 1) - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one run's latency samples, in milliseconds."""

    count: int
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencySummary:
        ordered = sorted(samples_ms)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            avg_ms=math.fsum(ordered) / len(ordered),
            p50_ms=percentile(ordered, 50),
            p95_ms=percentile(ordered, 95),
            p99_ms=percentile(ordered, 99),
            p999_ms=percentile(ordered, 99.9),
            max_ms=ordered[-1],
        )

    def to_json(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in _items(self)}

    def describe(self) -> str:
        if not self.count:
            return "no latency samples"
        return (
            f"latency ms p50 {self.p50_ms:.2f} · p95 {self.p95_ms:.2f} · p99 {self.p99_ms:.2f} · "
            f"p99.9 {self.p999_ms:.2f} · max {self.max_ms:.2f} (avg {self.avg_ms:.2f})"
        )


def _items(obj: Any) -> list[tuple[str, Any]]:
    return list(asdict(obj).items())
