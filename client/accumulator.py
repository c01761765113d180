"""The producer's record accumulator: per-partition batches, linger, back-pressure, retries.

Pure: no threads, no sockets, no clock — ``now_ms`` comes in. Owned by the Producer, which holds
its lock around every call; not thread-safe.

Rules (Kafka's ``RecordAccumulator``):
- Records append to the open batch of their partition; a batch closes when adding a record would
  pass ``batch_bytes_max`` (a record bigger than that gets a batch of its own).
- A partition's first batch is *ready* when it is closed, when it has lingered ``linger_ms``,
  when a flush is in progress, or when the buffer is full (someone is waiting for space).
- At most ``in_flight_max`` batches per partition are in flight; ordering within a partition is
  kept because a retried batch goes back to the *front* of its queue and nothing behind it is
  sent until it has succeeded (with ``in_flight_max = 1``; idempotence lifts this to 5).
- The buffer holds at most ``buffer_bytes_max`` of records (open, queued and in flight);
  ``append`` refuses beyond that and the producer blocks (back-pressure).
- A batch not acknowledged ``delivery_timeout_ms`` after its first record arrived is expired.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftlog.segments.batch import BatchBuilder, Compression

__all__ = ["ProducerBatch", "RecordAccumulator"]

TopicPartition = tuple[str, int]
# bytes of framing per record, an upper bound for buffer accounting: Kafka's varint framing (length,
# attributes, deltas, key/value lengths, header count) is 7-12 bytes for records under 8 KiB
_RECORD_OVERHEAD = 24


@dataclass(slots=True, eq=False)
class ProducerBatch:
    """One batch on its way: its records' completion slots and its delivery state."""

    key: TopicPartition
    builder: BatchBuilder
    created_ms: int
    future: Any = None  # completes for every record of the batch at once (the producer's)
    record_count: int = 0
    size_bytes: int = 0  # uncompressed record bytes, for the buffer bound
    closed: bool = False
    attempts: int = 0
    retry_at_ms: int = 0
    built: bytes | None = None  # the bytes sent (kept for retries: the same bytes every time)
    base_sequence: int = -1
    last_error: BaseException | None = None  # why the last attempt failed, for the final error
    order: int = 0  # creation order within the accumulator: requeues keep it
    producer_epoch: int = -1  # idempotence: the epoch the batch was sequenced under

    def bytes(self) -> bytes:
        if self.built is None:
            self.built = self.builder.build()
        return self.built


class RecordAccumulator:
    """See the module docstring."""

    def __init__(
        self,
        *,
        batch_bytes_max: int = 256 << 10,
        linger_ms: int = 5,
        buffer_bytes_max: int = 64 << 20,
        compression: Compression | str | None = Compression.NONE,
        in_flight_max: int = 1,
    ) -> None:
        if batch_bytes_max < 1024 or buffer_bytes_max < batch_bytes_max:
            raise ValueError("batch_bytes_max >= 1 KiB and buffer_bytes_max >= batch_bytes_max")
        self.batch_bytes_max = batch_bytes_max
        self.linger_ms = linger_ms
        self.buffer_bytes_max = buffer_bytes_max
        self.compression = Compression.parse(compression)
        self.in_flight_max = in_flight_max
        self._queues: dict[TopicPartition, deque[ProducerBatch]] = {}
        self._in_flight: dict[TopicPartition, int] = {}
        self.buffered_bytes = 0  # open + queued + in flight
        self.flushing = 0  # flush() calls in progress
        self.waiting_for_space = 0  # senders blocked on the buffer
        self._created = 0

    # ---- appending -----------------------------------------------------------------------------

    def record_size(self, key: bytes | None, value: bytes | None, headers: Sequence[Any]) -> int:
        size = _RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
        for hk, hv in headers:
            size += 8 + len(hk) + (len(hv) if hv else 0)
        return size

    def has_room(self, size: int) -> bool:
        return self.buffered_bytes + size <= self.buffer_bytes_max or self.buffered_bytes == 0

    def append(
        self,
        key: TopicPartition,
        record_key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        timestamp_ms: int,
        now_ms: int,
        size: int | None = None,
    ) -> tuple[ProducerBatch, bool] | None:
        """Add a record; (its batch, whether that batch just filled up), or None when full.

        ``size``: ``record_size`` of this record, when the caller has it already.
        """
        if size is None:
            size = self.record_size(record_key, value, headers)
        if not self.has_room(size):
            return None
        queue = self._queues.setdefault(key, deque())
        batch = queue[-1] if queue and not queue[-1].closed else None
        if batch is not None and batch.size_bytes + size > self.batch_bytes_max:
            batch.closed = True
            batch = None
        filled = batch is None and bool(queue) and queue[-1].closed
        if batch is None:
            self._created += 1
            batch = ProducerBatch(key, BatchBuilder(self.compression), now_ms, order=self._created)
            queue.append(batch)
        batch.builder.append(value, key=record_key, timestamp_ms=timestamp_ms, headers=headers)
        batch.record_count += 1
        batch.size_bytes += size
        self.buffered_bytes += size
        if batch.size_bytes >= self.batch_bytes_max:
            batch.closed = True
            filled = True
        return batch, filled

    # ---- draining ------------------------------------------------------------------------------

    def ready(self, now_ms: int) -> list[ProducerBatch]:
        """Batches to send now (at most ``in_flight_max`` per partition); marks them in flight."""
        out = []
        force = self.flushing > 0 or self.waiting_for_space > 0
        for key, queue in self._queues.items():
            if not queue:
                continue
            in_flight = self._in_flight.get(key, 0)
            taken = 0  # a prefix of the queue: the first batch that may not go stops the rest
            for batch in queue:
                if in_flight >= self.in_flight_max:
                    break
                if batch.retry_at_ms > now_ms:
                    break  # a retry waits its backoff, and nothing may pass it
                if not (batch.closed or force or now_ms - batch.created_ms >= self.linger_ms):
                    break
                if batch.attempts and in_flight:
                    break  # a retry goes alone: nothing behind it may land first
                batch.closed = True
                out.append(batch)
                in_flight += 1
                taken += 1
            self._in_flight[key] = in_flight
            for _ in range(taken):
                queue.popleft()
        return out

    def next_ready_ms(self, now_ms: int) -> int:
        """When the next batch becomes ready on time alone (the sender's sleep)."""
        soonest = now_ms + 1000
        for key, queue in self._queues.items():
            in_flight = self._in_flight.get(key, 0)
            if queue and in_flight < self.in_flight_max:
                batch = queue[0]
                if batch.attempts and in_flight:
                    continue  # a retry waits for the answers in flight, which wake the sender
                at = max(batch.retry_at_ms, batch.created_ms + self.linger_ms)
                soonest = min(soonest, at)
        return max(soonest, now_ms)

    def requeue(self, batch: ProducerBatch, retry_at_ms: int) -> None:
        """A retriable failure: back to the front of its partition's queue after a backoff."""
        self._in_flight[batch.key] = max(0, self._in_flight.get(batch.key, 0) - 1)
        batch.retry_at_ms = retry_at_ms
        queue = self._queues.setdefault(batch.key, deque())
        # back in creation order: with several batches in flight, later ones may fail first
        position = 0
        while position < len(queue) and queue[position].order < batch.order:
            position += 1
        queue.insert(position, batch)

    def expedite(self, partitions: set[TopicPartition], now_ms: int) -> None:
        """A partition has a new leader: its retries need not wait out their backoff."""
        for key in partitions:
            for batch in self._queues.get(key, ()):
                batch.retry_at_ms = min(batch.retry_at_ms, now_ms)

    def done(self, batch: ProducerBatch) -> None:
        """Acknowledged or failed for good: release its partition slot and its bytes."""
        self._in_flight[batch.key] = max(0, self._in_flight.get(batch.key, 0) - 1)
        self.buffered_bytes -= batch.size_bytes

    def expired(self, now_ms: int, delivery_timeout_ms: int) -> list[ProducerBatch]:
        """Queued (not in flight) batches older than the delivery timeout, removed."""
        out = []
        for queue in self._queues.values():
            while queue and now_ms - queue[0].created_ms >= delivery_timeout_ms:
                batch = queue.popleft()
                self.buffered_bytes -= batch.size_bytes
                out.append(batch)
        return out

    def pending(self) -> int:
        """Batches not yet acknowledged: queued plus in flight."""
        return sum(len(q) for q in self._queues.values()) + sum(self._in_flight.values())

    def queued(self) -> list[ProducerBatch]:
        """Every batch waiting to be sent (not in flight), in partition order."""
        return [b for q in self._queues.values() for b in q]

    def remove(self, batch: ProducerBatch) -> None:
        """Take a queued batch out for good (it failed): its bytes are released."""
        self._queues[batch.key].remove(batch)
        self.buffered_bytes -= batch.size_bytes

    def abort_all(self) -> list[ProducerBatch]:
        out = [b for q in self._queues.values() for b in q]
        for batch in out:
            self.buffered_bytes -= batch.size_bytes
        self._queues.clear()
        return out
