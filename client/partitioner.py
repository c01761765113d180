"""Which partition a record goes to: Kafka's murmur2 for keys, sticky batches for no key.

Pure. ``murmur2`` is the exact function of Kafka's Java client (``Utils.murmur2``), so a key
lands on the same partition number here as with a Java producer on a topic of the same size.
Worked example: ``murmur2(b"21") == -973932308``; on 3 partitions,
``(murmur2(b"21") & 0x7fffffff) % 3 == 1``.

Records without a key stick to one partition until its batch is sent, then move on (KIP-480's
sticky partitioner): full batches instead of many tiny ones.
"""

from __future__ import annotations

__all__ = ["StickyPartitioner", "key_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StickyPartitioner:
    """Keyless records: one partition per topic until ``next_batch`` is called for it.

    Owned by the producer (under its lock); not thread-safe.
    """

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._counter = 0

    def partition(self, topic: str, partitions: int) -> int:
        current = self._current.get(topic)
        if current is None or current >= partitions:
            current = self._counter % partitions
            self._counter += 1
            self._current[topic] = current
        return current

    def next_batch(self, topic: str, partitions: int, previous: int) -> None:
        """The batch of ``previous`` was closed: move keyless records elsewhere."""
        if self._current.get(topic) == previous and partitions > 1:
            self._current[topic] = (previous + 1) % partitions
