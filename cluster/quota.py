"""Byte-rate quotas per principal (Kafka's ``producer_byte_rate`` / ``consumer_byte_rate``).

Pure: time comes in as ``now_ms`` (monotonic). Owned by the broker loop; not thread-safe.

Each principal has a token bucket per direction: it fills at ``rate`` bytes per second up to one
second's worth (``burst_s``), and every produce or fetch takes its bytes out. A bucket in debt is
a principal over its quota: the broker answers that request only after ``throttle_ms`` — the time
the bucket needs to be back at zero — and says so in the response (``throttle_time_ms``), like
Kafka (KIP-219), which delays the response instead of refusing the request. A client that waits
for its answers before sending more (every raftlog client has an in-flight cap) is slowed to the
quota; one that does not keep its calls queued on the broker, which the in-flight limit of the
listener bounds.

Worked example: rate 1 MB/s, a full bucket (1 MB). A 3 MB produce leaves -2 MB: its answer waits
2,000 ms. Had the same client sent 0.5 MB per second, it would never wait.

Brokers (replication) and super users are never throttled. Idle buckets are dropped after
``IDLE_MS`` (they would be full again by then), so the table is bounded by the active principals.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IDLE_MS", "THROTTLE_MS_MAX", "QuotaConfig", "Quotas"]

IDLE_MS = 60_000
THROTTLE_MS_MAX = 30_000  # one answer waits at most this long (Kafka: the quota window)


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Bytes per second; -1 = unlimited. ``overrides`` maps a principal to (produce, fetch)."""

    producer_byte_rate: int = -1
    consumer_byte_rate: int = -1
    overrides: tuple[tuple[str, int, int], ...] = ()
    burst_s: float = 1.0

    def rates(self, principal: str) -> tuple[int, int]:
        for name, produce, fetch in self.overrides:
            if name == principal:
                return produce, fetch
        return self.producer_byte_rate, self.consumer_byte_rate


@dataclass(slots=True)
class _Bucket:
    tokens: float  # bytes; negative = in debt
    at_ms: int


class Quotas:
    """The token buckets of every active principal, one kind (produce or fetch) each."""

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._buckets: dict[tuple[str, bool], _Bucket] = {}
        self._swept_ms = 0

    def _rate(self, principal: str, produce: bool) -> int:
        produce_rate, fetch_rate = self.config.rates(principal)
        return produce_rate if produce else fetch_rate

    def record(self, principal: str, produce: bool, size_bytes: int, now_ms: int) -> int:
        """Take ``size_bytes`` from the principal's bucket; the answer's delay in ms (0: none)."""
        rate = self._rate(principal, produce)
        if rate < 0:
            return 0
        self._sweep(now_ms)
        capacity = max(1.0, rate * self.config.burst_s)
        key = (principal, produce)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now_ms)
        elapsed_s = max(0, now_ms - bucket.at_ms) / 1000
        bucket.tokens = min(capacity, bucket.tokens + elapsed_s * rate)
        bucket.at_ms = now_ms
        bucket.tokens -= size_bytes
        if bucket.tokens >= 0 or rate == 0:
            return 0 if rate else THROTTLE_MS_MAX
        return min(THROTTLE_MS_MAX, int(-bucket.tokens * 1000 / rate) + 1)

    def _sweep(self, now_ms: int) -> None:
        if now_ms - self._swept_ms < IDLE_MS:
            return
        self._swept_ms = now_ms
        for key in [k for k, b in self._buckets.items() if now_ms - b.at_ms >= IDLE_MS]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
