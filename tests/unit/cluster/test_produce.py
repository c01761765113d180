"""The leader's produce decision (cluster/produce.py), without a log or a broker."""

from __future__ import annotations

from raftlog.cluster.produce import Append, Duplicate, Refuse, produce_decision
from raftlog.cluster.producer_state import ProducerStateManager
from raftlog.proto.codes import ErrorCode
from raftlog.segments import BatchBuilder, build_batch
from raftlog.segments.clock import WallMs

MAX = 1 << 20


def idempotent_batch(seq: int, count: int = 3, pid: int = 7, epoch: int = 0) -> bytes:
    builder = BatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for i in range(count):
        builder.append(f"v{i}".encode(), timestamp_ms=1)
    return builder.build()


def test_below_min_isr_acks_all_is_refused_and_acks_1_is_not() -> None:
    batch = build_batch([b"x"], timestamp_ms=1)
    assert produce_decision(batch, -1, 1, 2, MAX, ProducerStateManager()) == Refuse(
        ErrorCode.NOT_ENOUGH_REPLICAS, "1 in-sync replica(s), min.insync.replicas is 2"
    )
    assert isinstance(produce_decision(batch, 1, 1, 2, MAX, ProducerStateManager()), Append)


def test_bad_bytes_are_refused_whole() -> None:
    good = build_batch([b"x"], timestamp_ms=1)
    state = ProducerStateManager()
    assert (
        produce_decision(good + b"\x00\x01", -1, 3, 2, MAX, state).code == ErrorCode.CORRUPT_MESSAGE
    )  # type: ignore[union-attr]
    assert produce_decision(b"", -1, 3, 2, MAX, state).code == ErrorCode.CORRUPT_MESSAGE  # type: ignore[union-attr]
    flipped = bytearray(good)
    flipped[-1] ^= 1
    assert isinstance(produce_decision(bytes(flipped), -1, 3, 2, MAX, state), Refuse)
    assert produce_decision(good, -1, 3, 2, 10, state).code == ErrorCode.MESSAGE_TOO_LARGE  # type: ignore[union-attr]


def test_idempotent_batches_are_checked_against_the_producer_state() -> None:
    state = ProducerStateManager()
    first = idempotent_batch(0)
    decided = produce_decision(first, -1, 3, 2, MAX, state)
    assert isinstance(decided, Append) and len(decided.batches) == 1
    state.record(7, 0, 0, 2, 100, 102, WallMs(1))  # what the shell does after the append
    again = produce_decision(first, -1, 3, 2, MAX, state)
    assert isinstance(again, Duplicate) and (
        again.stored.first_offset,
        again.stored.last_offset,
    ) == (
        100,
        102,
    )
    gap = produce_decision(idempotent_batch(9), -1, 3, 2, MAX, state)
    assert isinstance(gap, Refuse) and gap.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    two = idempotent_batch(3) + idempotent_batch(6)
    assert produce_decision(two, -1, 3, 2, MAX, state) == Refuse(
        ErrorCode.INVALID_RECORD, "an idempotent produce carries one batch per partition"
    )


def test_a_compacted_topic_refuses_a_record_without_a_key_and_appends_nothing() -> None:
    keyed = build_batch([b"a"], keys=[b"k"], timestamp_ms=1)
    keyless = build_batch([b"a", b"b"], keys=[b"k", None], timestamp_ms=1, compression="zstd")
    state = ProducerStateManager()
    refused = produce_decision(keyed + keyless, 1, 1, 1, 1 << 20, state, compacted=True)
    assert refused == Refuse(
        ErrorCode.INVALID_RECORD, "Compacted topic cannot accept message without key"
    )
    assert isinstance(produce_decision(keyed, 1, 1, 1, 1 << 20, state, compacted=True), Append)
    assert isinstance(produce_decision(keyless, 1, 1, 1, 1 << 20, state), Append)  # delete
