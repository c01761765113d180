"""Sequence rules of the idempotent producer, per partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftlog.cluster.producer_state import (
    BATCHES_KEPT,
    BatchRef,
    ProducerStateManager,
    VerdictKind,
)
from raftlog.segments.clock import WallMs


def appended(
    state: ProducerStateManager, pid: int, epoch: int, seq: int, n: int, offset: int
) -> None:
    verdict = state.check(pid, epoch, seq, seq + n - 1)
    assert verdict.kind is VerdictKind.APPEND, verdict
    state.record(pid, epoch, seq, seq + n - 1, offset, offset + n - 1, timestamp_ms=WallMs(0))


def test_in_order_batches_append_and_a_retry_gets_its_original_offsets() -> None:
    state = ProducerStateManager()
    appended(state, 7, 0, 0, 3, offset=100)
    appended(state, 7, 0, 3, 2, offset=110)
    verdict = state.check(7, 0, 0, 2)
    assert verdict.kind is VerdictKind.DUPLICATE
    assert verdict.duplicate_of == BatchRef(0, 2, 100, 102)


def test_a_gap_is_out_of_order() -> None:
    state = ProducerStateManager()
    appended(state, 7, 0, 0, 3, offset=0)
    assert state.check(7, 0, 5, 6).kind is VerdictKind.OUT_OF_ORDER
    assert state.check(7, 0, 1, 3).kind is VerdictKind.OUT_OF_ORDER  # overlapping, not equal


def test_an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero() -> None:
    state = ProducerStateManager()
    appended(state, 7, 1, 0, 1, offset=0)
    assert state.check(7, 0, 1, 1).kind is VerdictKind.FENCED
    assert state.check(7, 2, 4, 4).kind is VerdictKind.OUT_OF_ORDER
    appended(state, 7, 2, 0, 1, offset=1)
    assert state.check(7, 1, 1, 1).kind is VerdictKind.FENCED


def test_only_the_last_five_batches_are_remembered() -> None:
    state = ProducerStateManager()
    for i in range(BATCHES_KEPT + 2):
        appended(state, 1, 0, i, 1, offset=i)
    assert state.check(1, 0, BATCHES_KEPT + 1, BATCHES_KEPT + 1).kind is VerdictKind.DUPLICATE
    assert state.check(1, 0, 0, 0).kind is VerdictKind.OUT_OF_ORDER  # too old to dedupe


def test_an_unknown_producer_must_start_at_sequence_zero() -> None:
    # requests can arrive out of order: the second batch must not get in before the first
    state = ProducerStateManager()
    assert state.check(3, 0, 76, 124).kind is VerdictKind.OUT_OF_ORDER
    appended(state, 3, 0, 0, 76, offset=0)
    appended(state, 3, 0, 76, 49, offset=76)


def test_sequences_wrap_at_2_31() -> None:
    state = ProducerStateManager()
    top = (1 << 31) - 1
    state.record(1, 0, top - 1, top, 0, 1, timestamp_ms=WallMs(0))
    assert state.check(1, 0, 0, 4).kind is VerdictKind.APPEND


def test_expiry_truncation_and_snapshots() -> None:
    state = ProducerStateManager()
    appended(state, 1, 0, 0, 1, offset=10)
    state.record(2, 0, 0, 0, 20, 20, timestamp_ms=WallMs(5000))
    assert state.truncated(15) and not state.truncated(21)
    copy = ProducerStateManager.from_snapshot(state.to_snapshot())
    assert copy.check(1, 0, 0, 0).duplicate_of == BatchRef(0, 0, 10, 10)
    assert state.expire(now_ms=WallMs(6000), idle_ms_max=2000) == 1
    assert state.entry(1) is None and state.entry(2) is not None


def test_the_producer_count_is_bounded() -> None:
    state = ProducerStateManager(producers_max=3)
    for pid in range(5):
        state.record(pid, 0, 0, 0, pid, pid, timestamp_ms=WallMs(pid))
    assert len(state) == 3 and state.entry(0) is None


@given(st.lists(st.integers(1, 4), min_size=1, max_size=30), st.data())
def test_replaying_any_retry_pattern_stores_each_batch_once(
    sizes: list[int], data: st.DataObject
) -> None:
    """A producer sends batches in order; any batch may be retried later (after its answer was
    lost). Every retry of a kept batch is a duplicate; the log never holds a batch twice."""
    state = ProducerStateManager()
    log: list[tuple[int, int]] = []
    seq = 0
    sent: list[tuple[int, int]] = []
    for n in sizes:
        sent.append((seq, seq + n - 1))
        seq += n
        for first, last in [
            sent[-1],
            *data.draw(st.lists(st.sampled_from(sent[-BATCHES_KEPT:]), max_size=2)),
        ]:
            verdict = state.check(9, 0, first, last)
            if verdict.kind is VerdictKind.APPEND:
                offset = len(log)
                log.append((first, last))
                state.record(9, 0, first, last, offset, offset, timestamp_ms=WallMs(0))
            else:
                assert verdict.kind is VerdictKind.DUPLICATE
                assert log[verdict.duplicate_of.first_offset] == (first, last)  # type: ignore[union-attr]
    assert log == sent
