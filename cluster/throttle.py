"""The catch-up throttle of a reassignment: what a leader may send the replicas being added.

Pure: time comes in as ``now_ms`` (monotonic). Owned by the broker loop; not thread-safe.

``raftlog partition reassign --throttle B`` puts B bytes/s in the reassignment (the partition's
record, ``raft/metadata_records.py``); the leader of a partition being moved serves the fetches of
each *adding* replica from a token bucket of that rate (one second of burst), so copying a large
log to new brokers leaves the disks and the network to the producers and the in-sync followers,
which are never throttled. A read takes at most what the bucket holds (at least one batch, as
every fetch); the bucket may go into debt by that batch, and nothing more is sent until it is
paid back. Kafka throttles a broker's total (``leader.replication.throttled.rate``); this is per
partition and new replica — a move of RF 3 onto three new brokers copies at most 3 × B bytes/s.

Worked example: rate 1 MB/s, a full bucket (1 MB): a fetch gets 1 MB; one 0.3 s later gets 0.3 MB;
a batch of 2 MB read from a full bucket leaves -1 MB, and the next 1 s of fetches get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ByteRateLimit"]


@dataclass(slots=True)
class ByteRateLimit:
    rate: int  # bytes/s, > 0
    tokens: float
    at_ms: int

    @classmethod
    def full(cls, rate: int, now_ms: int) -> ByteRateLimit:
        return cls(rate, float(rate), now_ms)

    def allowance(self, now_ms: int) -> int:
        """Bytes that may be sent now (0 while in debt)."""
        elapsed_s = max(0, now_ms - self.at_ms) / 1000
        self.tokens = min(float(self.rate), self.tokens + elapsed_s * self.rate)
        self.at_ms = now_ms
        return max(0, int(self.tokens))

    def spend(self, size_bytes: int) -> None:
        self.tokens -= size_bytes
