"""The leader's produce decision for one partition: pure, no IO, no clock.

Given what a producer sent to one partition and the leader's state (its ISR size against
``min.insync.replicas``, the topic's ``max.message.bytes``, the partition's producer state), decide
before anything is written — a bad request appends nothing:

1. acks=all with fewer in-sync replicas than the minimum → NOT_ENOUGH_REPLICAS (nothing appended);
2. not whole batches → CORRUPT_MESSAGE; a batch that fails its checks (CRC, size, magic, count)
   → its typed error (``segments.validate_batch``);
3. a compacted topic (``cleanup.policy`` with ``compact``) refuses a record without a key →
   INVALID_RECORD ("Compacted topic cannot accept message without key", Kafka's words): the
   cleaner keeps the latest record *per key*. Only here does the broker decode records (as Kafka
   does for compacted topics); a payload that does not decode is CORRUPT_MESSAGE;
4. an idempotent produce (producer id >= 0) carries exactly one batch (as in Kafka, so a retry is
   all or nothing) → INVALID_RECORD otherwise; the producer state's verdict: a retry of a stored
   batch is DUPLICATE_SEQUENCE_NUMBER with the stored offsets, an out-of-order sequence or a fenced
   epoch is its error;
5. otherwise append these batches.

``replica_manager.ReplicaManager.append`` carries the decision out (the append, the producer-state
record, the high watermark and the purgatory).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftlog.proto.codes import ErrorCode
from raftlog.segments import BatchHeader, StorageError, iter_batches, iter_records, validate_batch

from .producer_state import BatchRef, ProducerStateManager, VerdictKind

__all__ = ["Append", "Duplicate", "ProduceDecision", "Refuse", "produce_decision"]


@dataclass(frozen=True, slots=True)
class Refuse:
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    stored: BatchRef  # where the original of this retry is


@dataclass(frozen=True, slots=True)
class Append:
    batches: list[memoryview]
    headers: list[BatchHeader]


ProduceDecision = Refuse | Duplicate | Append


def produce_decision(
    records: bytes | memoryview,
    acks: int,
    isr_size: int,
    min_insync_replicas: int,
    max_message_bytes: int,
    producers: ProducerStateManager,
    *,
    compacted: bool = False,
) -> ProduceDecision:
    if acks == -1 and isr_size < min_insync_replicas:
        return Refuse(
            ErrorCode.NOT_ENOUGH_REPLICAS,
            f"{isr_size} in-sync replica(s), min.insync.replicas is {min_insync_replicas}",
        )
    view = memoryview(records)
    try:
        batches = [view[p : p + h.size_bytes] for p, h in iter_batches(view, verify_crc=False)]
        if not batches or sum(len(b) for b in batches) != len(view):
            return Refuse(ErrorCode.CORRUPT_MESSAGE, "not whole batches")
        headers = [validate_batch(b, max_message_bytes) for b in batches]
        if compacted:
            for batch in batches:
                if any(record.key is None for record in iter_records(batch)):
                    return Refuse(
                        ErrorCode.INVALID_RECORD,
                        "Compacted topic cannot accept message without key",
                    )
    except StorageError as exc:
        return Refuse(exc.code, str(exc))
    idempotent = [h for h in headers if h.producer_id >= 0]
    if idempotent:
        if len(headers) != 1:
            return Refuse(
                ErrorCode.INVALID_RECORD, "an idempotent produce carries one batch per partition"
            )
        header = headers[0]
        verdict = producers.check(
            header.producer_id, header.producer_epoch, header.base_sequence, header.last_sequence
        )
        if verdict.kind is VerdictKind.DUPLICATE:
            assert verdict.duplicate_of is not None
            return Duplicate(verdict.duplicate_of)
        if verdict.kind is not VerdictKind.APPEND:
            return Refuse(verdict.kind.value, verdict.message)
    return Append(batches, headers)
