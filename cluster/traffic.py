"""What flowed through one broker since it started: plain counters the broker loop bumps.

The hot paths (a leader's append, a fetch answered, a follower's append, an ISR change) add to
these ints and nothing else: no lock, no label lookup, no clock. Whoever wants a rate reads
them — the ``/metrics`` collector (``metrics.py``) as Prometheus counters, the windowed rates of
``raftlog status`` (``rates.py``) by sampling them every second. Only the loop writes them, and
readers on other threads take a copy on the loop (``metrics.py``), so no reader sees a dict
change size under it.

Per topic: records and bytes a leader appended for producers (``in``) and records and bytes
answered to consumers (``out``; a follower's fetch is replication, counted apart, as Kafka's
``ReplicationBytesIn/OutPerSec``). A topic's row stays after the topic is deleted, as a
Prometheus counter does; it is one small object per topic this process ever served.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftlog.segments.batch import HEADER_BYTES, read_header

__all__ = ["TopicTraffic", "Traffic", "record_count"]


@dataclass(slots=True)
class TopicTraffic:
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0


@dataclass(slots=True)
class Traffic:
    topics: dict[str, TopicTraffic] = field(default_factory=dict)
    replication_bytes_in: int = 0  # a follower's appends from its leader
    replication_bytes_out: int = 0  # a leader's answers to its followers' fetches
    isr_shrinks: int = 0  # ISR changes of partitions this broker leads (Kafka: IsrShrinksPerSec)
    isr_expands: int = 0

    def counters(self) -> dict[tuple[str, str], int]:
        """Every counter by (name, topic or ""), for the windowed rates (``rates.py``)."""
        out = {
            ("replication_bytes_in", ""): self.replication_bytes_in,
            ("replication_bytes_out", ""): self.replication_bytes_out,
            ("isr_shrinks", ""): self.isr_shrinks,
            ("isr_expands", ""): self.isr_expands,
        }
        for name, row in self.topics.items():
            out["records_in", name] = row.records_in
            out["bytes_in", name] = row.bytes_in
            out["records_out", name] = row.records_out
            out["bytes_out", name] = row.bytes_out
        return out

    def topic(self, name: str) -> TopicTraffic:
        found = self.topics.get(name)
        if found is None:
            found = self.topics[name] = TopicTraffic()
        return found

    def produced(self, topic: str, records: int, size: int) -> None:
        row = self.topic(topic)
        row.records_in += records
        row.bytes_in += size

    def consumed(self, topic: str, data: bytes) -> None:
        """A consumer's fetch answered ``data`` (whole batches) for ``topic``."""
        if data:
            row = self.topic(topic)
            row.records_out += record_count(data)
            row.bytes_out += len(data)

    def isr_changed(self, before: tuple[int, ...], after: tuple[int, ...]) -> None:
        """A led partition's committed ISR went from ``before`` to ``after``: a member leaving
        counts a shrink, one joining an expand (both when one replaces another)."""
        old, new = set(before), set(after)
        self.isr_shrinks += bool(old - new)
        self.isr_expands += bool(new - old)


def record_count(data: bytes | memoryview) -> int:
    """Records in a run of whole record batches, from their headers alone (one header read per
    batch, nothing decompressed). A torn tail is not counted; fetches answer whole batches."""
    count = position = 0
    end = len(data)
    while end - position >= HEADER_BYTES:
        header = read_header(data, position)
        count += header.record_count
        position += header.size_bytes
    return count
