"""Windowed rates from sampled cumulative counters (cluster/rates.py), time passed in."""

from __future__ import annotations

import pytest

from raftlog.cluster.rates import CounterHistory

IN = ("records_in", "orders")


def sampled(*points: tuple[int, int]) -> CounterHistory:
    history = CounterHistory(span_ms=70_000)
    for at_ms, value in points:
        history.sample(at_ms, {IN: value})
    return history


def test_no_rate_before_two_samples() -> None:
    assert CounterHistory().rate(IN, 5000, 0) == 0.0
    assert sampled((0, 100)).rate(IN, 5000, 0) == 0.0
    assert sampled((0, 100)).increase(IN, 5000, 0) == 0


def test_the_rate_is_over_the_samples_inside_the_window() -> None:
    # 100/s for 10 s, then 1,000/s for 5 s
    points = [(t * 1000, 100 * t) for t in range(11)]
    points += [(10_000 + t * 1000, 1000 + 1000 * t) for t in range(1, 6)]
    history = sampled(*points)
    assert history.rate(IN, 5000, 15_000) == pytest.approx(1000.0)
    assert history.rate(IN, 15_000, 15_000) == pytest.approx(6000 / 15)
    assert history.increase(IN, 5000, 15_000) == 5000


def test_an_idle_counter_falls_to_zero_once_the_window_passes() -> None:
    history = sampled((0, 0), (1000, 500), (2000, 1000))
    for t in range(3, 9):
        history.sample(t * 1000, {IN: 1000})
    assert history.rate(IN, 5000, 8000) == 0.0


def test_a_counter_new_since_the_oldest_sample_counts_from_zero() -> None:
    history = CounterHistory()
    history.sample(0, {})
    history.sample(1000, {IN: 300})
    assert history.rate(IN, 5000, 1000) == pytest.approx(300.0)


def test_a_reset_counts_from_the_new_value_not_a_negative_rate() -> None:
    history = sampled((0, 5000), (1000, 200))
    assert history.increase(IN, 5000, 1000) == 200
    assert history.rate(IN, 5000, 1000) == pytest.approx(200.0)


def test_the_history_is_bounded_but_keeps_a_full_window() -> None:
    history = CounterHistory(span_ms=10_000)
    for t in range(1000):
        history.sample(t * 1000, {IN: t})
    assert len(history._samples) <= 12
    assert history.increase(IN, 10_000, 999_000) == 10
