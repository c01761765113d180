"""Byte-rate quotas: token buckets per principal and direction, time passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftlog.cluster.quota import IDLE_MS, THROTTLE_MS_MAX, QuotaConfig, Quotas

MB = 1_000_000


def test_the_worked_example() -> None:
    quotas = Quotas(QuotaConfig(producer_byte_rate=MB))
    assert quotas.record("User:a", True, 3 * MB, 0) == 2001  # 2 MB of debt at 1 MB/s
    assert quotas.record("User:a", True, 0, 2001) == 0  # paid back


def test_a_client_under_its_rate_never_waits() -> None:
    quotas = Quotas(QuotaConfig(producer_byte_rate=MB))
    assert all(quotas.record("User:a", True, MB // 2, t * 1000) == 0 for t in range(100))


def test_directions_principals_and_overrides_are_separate() -> None:
    quotas = Quotas(
        QuotaConfig(
            producer_byte_rate=MB, consumer_byte_rate=-1, overrides=(("User:big", 10 * MB, MB),)
        )
    )
    assert quotas.record("User:a", True, 2 * MB, 0) > 0
    assert quotas.record("User:a", False, 100 * MB, 0) == 0  # no fetch quota
    assert quotas.record("User:b", True, MB, 0) == 0  # its own bucket
    assert quotas.record("User:big", True, 5 * MB, 0) == 0  # its override
    assert quotas.record("User:big", False, 2 * MB, 0) > 0


def test_a_zero_rate_holds_every_answer_as_long_as_allowed() -> None:
    quotas = Quotas(QuotaConfig(producer_byte_rate=0))
    assert quotas.record("User:a", True, 1, 0) == THROTTLE_MS_MAX


def test_idle_buckets_are_dropped() -> None:
    quotas = Quotas(QuotaConfig(producer_byte_rate=MB))
    for i in range(100):
        quotas.record(f"User:{i}", True, 1, 0)
    quotas.record("User:late", True, 1, IDLE_MS)
    assert len(quotas) == 1


@given(
    st.lists(st.tuples(st.integers(0, 5 * MB), st.integers(0, 3000)), min_size=1, max_size=60),
    st.integers(1, 4 * MB),
)
def test_a_client_that_honours_the_throttle_stays_near_its_rate(
    sends: list[tuple[int, int]], rate: int
) -> None:
    """Whoever waits out each throttle never gets more than rate × time + one burst through."""
    quotas = Quotas(QuotaConfig(producer_byte_rate=rate))
    now = 0
    sent = 0
    for size, pause in sends:
        now += pause
        wait = quotas.record("User:a", True, size, now)
        sent += size
        now += wait
        if wait < THROTTLE_MS_MAX:
            assert sent <= rate * (now / 1000) + rate * 1.0 + 1  # rate × time + the burst
