"""Idempotent-producer state of one partition: the last batches of every producer id.

Pure: no IO, no clock (``now_ms`` comes in). Owned by the partition (``partition.Partition``), on
the broker loop; not thread-safe.

Every replica keeps this state as it appends — the leader from produce requests, followers from
the batches they fetch, every replica from its log on recovery — so a new leader dedupes a retry
exactly as the old one would have (DESIGN invariant 6). It is a *small* state: per producer id,
its epoch and the sequence ranges and offsets of its last ``BATCHES_KEPT`` (5) batches — the
number a producer may have in flight — never a "have I seen this record" store.

Rules for a batch (producer_id, epoch, first_seq..last_seq), Kafka's:

- epoch older than the producer's current epoch → PRODUCER_FENCED (a zombie).
- a newer epoch resets the producer: its sequence must start at 0.
- the same sequence range as one of the kept batches → a duplicate: answer that batch's offsets.
- the sequence following the producer's last one (mod 2**31) → append.
- an unknown producer id (new, or its state expired) → append if the sequence is 0, and start
  tracking it; any other sequence is out of order (an earlier batch may still be in flight;
  a producer whose state really expired bumps its epoch and starts again at 0).
- anything else → OUT_OF_ORDER_SEQUENCE_NUMBER (a gap: an earlier batch is missing).

Snapshots (cbor2, written to LMDB by ``producer_snapshots``) record the state as of a log offset;
recovery loads the newest snapshot at or below the log end and replays the batches after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from raftlog.proto.codes import ErrorCode
from raftlog.segments.batch import BatchHeader
from raftlog.segments.clock import WallMs

__all__ = [
    "BATCHES_KEPT",
    "BatchRef",
    "ProducerEntry",
    "ProducerStateManager",
    "Verdict",
    "VerdictKind",
]

BATCHES_KEPT = 5
_SEQ_MOD = 1 << 31


class VerdictKind(Enum):
    APPEND = "append"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    FENCED = ErrorCode.PRODUCER_FENCED


@dataclass(frozen=True, slots=True)
class BatchRef:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    duplicate_of: BatchRef | None = None
    message: str = ""


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchRef] = field(default_factory=lambda: deque(maxlen=BATCHES_KEPT))
    last_seen_ms: int = 0

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class ProducerStateManager:
    """See the module docstring."""

    def __init__(self, *, producers_max: int = 10_000) -> None:
        self._producers: dict[int, ProducerEntry] = {}
        self.producers_max = producers_max  # least recently seen ones are forgotten beyond this
        self.dirty = False  # changed since the last snapshot

    def __len__(self) -> int:
        return len(self._producers)

    def entry(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int) -> Verdict:
        """What to do with a batch, before appending it (the leader's check)."""
        entry = self._producers.get(producer_id)
        if entry is None:
            if first_seq != 0:
                # not the first batch of a producer we do not know: an earlier one is still on
                # its way (gRPC may deliver concurrent requests out of order) — accepting this
                # one first would store them out of order and refuse the earlier one for good
                return Verdict(
                    VerdictKind.OUT_OF_ORDER,
                    message=f"producer {producer_id} is unknown here: its first batch must "
                    f"start at sequence 0, not {first_seq}",
                )
            return Verdict(VerdictKind.APPEND)
        if epoch < entry.epoch:
            return Verdict(
                VerdictKind.FENCED,
                message=f"producer {producer_id} epoch {epoch} is older than {entry.epoch}",
            )
        if epoch > entry.epoch:
            if first_seq != 0:
                return Verdict(
                    VerdictKind.OUT_OF_ORDER,
                    message=f"a new epoch {epoch} must start at sequence 0, not {first_seq}",
                )
            return Verdict(VerdictKind.APPEND)
        for ref in entry.batches:
            if ref.first_seq == first_seq and ref.last_seq == last_seq:
                return Verdict(VerdictKind.DUPLICATE, duplicate_of=ref)
        if not entry.batches or first_seq == (entry.last_seq + 1) % _SEQ_MOD:
            return Verdict(VerdictKind.APPEND)
        return Verdict(
            VerdictKind.OUT_OF_ORDER,
            message=f"producer {producer_id} sent sequence {first_seq}, expected "
            f"{(entry.last_seq + 1) % _SEQ_MOD}",
        )

    def record(
        self,
        producer_id: int,
        epoch: int,
        first_seq: int,
        last_seq: int,
        first_offset: int,
        last_offset: int,
        timestamp_ms: WallMs,
    ) -> None:
        """A batch was appended (as leader, follower, or replayed from the log); its time is the
        batch's own max timestamp on every path, so every replica expires the same producers."""
        if producer_id < 0:
            return
        entry = self._producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = ProducerEntry(producer_id, epoch)
            self._producers[producer_id] = entry
        elif epoch < entry.epoch:
            return  # replaying the log of a zombie's write that was already superseded
        entry.batches.append(BatchRef(first_seq, last_seq, first_offset, last_offset))
        entry.last_seen_ms = max(entry.last_seen_ms, timestamp_ms)
        self.dirty = True
        if len(self._producers) > self.producers_max:
            oldest = min(self._producers.values(), key=lambda e: e.last_seen_ms)
            del self._producers[oldest.producer_id]

    def record_batch(self, header: BatchHeader, first_offset: int, last_offset: int) -> None:
        """``record`` for a batch appended at ``first_offset``-``last_offset``, from its header,
        at the batch's own time (its max timestamp)."""
        self.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.last_sequence,
            first_offset,
            last_offset,
            WallMs(header.max_timestamp),
        )

    def expire(self, now_ms: WallMs, idle_ms_max: int) -> int:
        """Forget producers silent for longer than ``idle_ms_max``; how many went."""
        gone = [pid for pid, e in self._producers.items() if now_ms - e.last_seen_ms > idle_ms_max]
        for pid in gone:
            del self._producers[pid]
        if gone:
            self.dirty = True
        return len(gone)

    def batch_offsets(self) -> frozenset[int]:
        """The first offset of every batch kept here: the log cleaner keeps these batches'
        headers (their producer fields), so a rebuild from the log finds the same state."""
        return frozenset(r.first_offset for e in self._producers.values() for r in e.batches)

    def truncated(self, end_offset: int) -> bool:
        """The log was cut at ``end_offset``: True when a kept batch lies beyond it (then the
        caller rebuilds from a snapshot and the log)."""
        return any(
            ref.last_offset >= end_offset for e in self._producers.values() for ref in e.batches
        )

    def clear(self) -> None:
        self._producers.clear()
        self.dirty = True

    # ---- snapshots -------------------------------------------------------------------------------

    def to_snapshot(self) -> list[Any]:
        return [
            [e.producer_id, e.epoch, e.last_seen_ms,
             [[r.first_seq, r.last_seq, r.first_offset, r.last_offset] for r in e.batches]]
            for e in self._producers.values()
        ]  # fmt: skip

    @classmethod
    def from_snapshot(
        cls, body: Iterable[Any], *, producers_max: int = 10_000
    ) -> ProducerStateManager:
        state = cls(producers_max=producers_max)
        for producer_id, epoch, last_seen_ms, batches in body:
            entry = ProducerEntry(int(producer_id), int(epoch), last_seen_ms=int(last_seen_ms))
            for first_seq, last_seq, first_offset, last_offset in batches:
                entry.batches.append(BatchRef(first_seq, last_seq, first_offset, last_offset))
            state._producers[entry.producer_id] = entry
        return state
