"""The repository's one percentile definition (nearest rank) and the latency summary built on it
(``raftlog.client.stats``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.client.stats import LatencySummary, percentile

# ---- percentiles -------------------------------------------------------------------------------


def test_nearest_rank_percentiles_of_a_small_list() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.0
    assert percentile(values, 75) == 3.0
    assert percentile(values, 99) == 4.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 0.1) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summary_of_one_to_a_thousand() -> None:
    summary = LatencySummary.of([float(i) for i in range(1000, 0, -1)])  # any order
    assert summary.count == 1000
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == (500.0, 950.0, 990.0)
    assert summary.p999_ms == 999.0  # not 1000: 99.9 % of 1000 is exactly 999 values
    assert summary.max_ms == 1000.0
    assert summary.avg_ms == pytest.approx(500.5)
    assert summary.to_json()["p99_ms"] == 990.0


def test_an_empty_summary_is_nan_and_null_in_json() -> None:
    summary = LatencySummary.of([])
    assert summary.count == 0 and math.isnan(summary.p99_ms)
    assert summary.to_json()["p99_ms"] is None
    assert summary.describe() == "no latency samples"


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.floats(0.01, 100))
def test_a_percentile_is_a_sample_with_at_least_q_percent_at_or_below(
    values: list[float], q: float
) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    at_or_below = sum(1 for v in ordered if v <= p)
    assert at_or_below >= q / 100 * len(ordered) - 1e-6
    below = sum(1 for v in ordered if v < p)
    assert below < q / 100 * len(ordered) + 1e-6  # and it is the smallest such value
