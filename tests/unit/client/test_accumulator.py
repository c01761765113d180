"""Batching rules of the producer's accumulator, and the key partitioner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftlog.client.accumulator import RecordAccumulator
from raftlog.client.partitioner import StickyPartitioner, key_partition, murmur2
from raftlog.segments import iter_batches, iter_records

TP = ("t", 0)


def acc(**kw: int) -> RecordAccumulator:
    settings = {"batch_bytes_max": 1024, "linger_ms": 10, "buffer_bytes_max": 4096}
    settings.update(kw)
    return RecordAccumulator(**settings)  # type: ignore[arg-type]


def add(a: RecordAccumulator, value: bytes, now: int = 0, tp: tuple[str, int] = TP) -> bool:
    result = a.append(tp, None, value, (), 1, now)
    return result is not None


def test_linger_then_ready_and_one_in_flight_per_partition() -> None:
    a = acc()
    add(a, b"x")
    assert a.ready(now_ms=5) == []  # lingering
    first = a.ready(now_ms=10)
    assert len(first) == 1 and first[0].record_count == 1
    add(a, b"y", now=11)
    assert a.ready(now_ms=30) == []  # the first is still in flight
    a.done(first[0])
    assert [b.record_count for b in a.ready(now_ms=30)] == [1]


def test_a_full_batch_is_ready_at_once_and_the_next_record_opens_a_new_one() -> None:
    a = acc()
    for _ in range(9):
        add(a, b"v" * 100)
    ready = a.ready(now_ms=0)
    assert len(ready) == 1 and ready[0].closed
    data = ready[0].bytes()
    records = [r.value for p, h in iter_batches(data) for r in iter_records(data)]
    assert records and all(v == b"v" * 100 for v in records)


def test_the_buffer_bound_refuses_and_frees_on_done() -> None:
    a = acc(buffer_bytes_max=1024)
    while add(a, b"z" * 100):
        pass
    assert a.buffered_bytes <= 1024
    assert not a.has_room(200)
    batches = a.ready(now_ms=100)
    for batch in batches:
        a.done(batch)
    assert a.buffered_bytes == 0 and a.has_room(200)


def test_a_retry_goes_back_to_the_front_and_waits_its_backoff() -> None:
    a = acc(linger_ms=0)
    add(a, b"first")
    (first,) = a.ready(now_ms=0)
    add(a, b"second", now=1)
    a.requeue(first, retry_at_ms=50)
    assert a.ready(now_ms=10) == []  # nothing passes the retry
    (again,) = a.ready(now_ms=50)
    assert again is first
    a.done(first)
    (second,) = a.ready(now_ms=60)
    assert second.record_count == 1 and second is not first


def test_expiry_removes_old_queued_batches() -> None:
    a = acc()
    add(a, b"old", now=0)
    assert [b.record_count for b in a.expired(now_ms=1000, delivery_timeout_ms=500)] == [1]
    assert a.pending() == 0 and a.buffered_bytes == 0


def test_murmur2_matches_kafka_test_vectors() -> None:
    # from Kafka's UtilsTest.testMurmur2
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string":
               -985981536, b"a-little-bit-longer-string": -1486304829, b"": 275646681}  # fmt: skip
    for data, expected in vectors.items():
        assert murmur2(data) == expected, data


@given(st.binary(max_size=64), st.integers(1, 50))
def test_the_same_key_always_lands_on_the_same_partition(key: bytes, partitions: int) -> None:
    assert key_partition(key, partitions) == key_partition(bytes(key), partitions)
    assert 0 <= key_partition(key, partitions) < partitions


def test_keyless_records_stick_to_a_partition_until_its_batch_closes() -> None:
    sticky = StickyPartitioner()
    first = sticky.partition("t", 3)
    assert sticky.partition("t", 3) == first
    sticky.next_batch("t", 3, first)
    assert sticky.partition("t", 3) == (first + 1) % 3


def test_several_in_flight_failing_out_of_order_are_requeued_in_creation_order() -> None:
    a = acc(linger_ms=0, in_flight_max=5)
    for i in range(3):
        a.append(TP, None, b"v" * 600, (), 1, i)  # 600 B: one batch each
    first, second, third = a.ready(now_ms=10)
    assert [b.order for b in (first, second, third)] == [1, 2, 3]
    a.requeue(third, retry_at_ms=0)
    a.requeue(first, retry_at_ms=0)
    a.requeue(second, retry_at_ms=0)
    assert [b.order for b in a.queued()] == [1, 2, 3]


def test_a_retry_behind_answers_in_flight_does_not_wake_the_sender() -> None:
    """A retry goes alone, so it waits for the batches in flight; the sender must sleep until
    their answers come (it spun every millisecond)."""
    a = acc(linger_ms=0, in_flight_max=5)
    for i in range(2):
        a.append(TP, None, b"v" * 600, (), 1, i)
    first, second = a.ready(now_ms=10)
    first.attempts = second.attempts = 1
    a.requeue(first, retry_at_ms=20)
    assert a.ready(now_ms=30) == []  # the second is still in flight
    assert a.next_ready_ms(now_ms=30) == 30 + 1000
    a.done(second)
    assert a.next_ready_ms(now_ms=30) == 30 and a.ready(now_ms=30) == [first]
