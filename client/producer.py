"""The Producer: ``send`` records, get futures of (partition, offset); batching, retries, acks.

Thread model: ``send`` may be called from any thread; it appends to the accumulator under the
producer's lock (blocking up to ``max_block_ms`` while the buffer is full) and returns a
``SendFuture``. One sender thread drains ready batches, groups them by partition leader, and
sends one Produce request per leader at a time (gRPC futures, at most
``in_flight_requests_max`` per broker); gRPC's threads hand responses back through a queue. The
pure rules live in ``accumulator.py``; this is the IO shell around them.

Errors: a retriable error (leader moved, not enough replicas, timeouts, a dead broker) re-queues
the batch at the front of its partition with exponential backoff and jitter, refreshing metadata
when the error says it is stale, until ``delivery_timeout_ms`` since the record was sent; then the
record's future fails with the last error (``DeliveryTimeoutError`` if it never got an answer).
A fatal error (message too large, corrupt, invalid config) fails the batch at once.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

import grpc

from raftlog.proto import broker_pb2
from raftlog.proto.errors import RaftlogError, error_for

from .accumulator import ProducerBatch, RecordAccumulator
from .errors import (
    BufferFullError,
    DeliveryTimeoutError,
    DuplicateSequenceNumberError,
    NetworkError,
    OutOfOrderSequenceNumberError,
    ProducerClosedError,
    ProducerFencedError,
)
from .metadata import ClusterMetadata
from .metrics import ClientMetrics
from .partitioner import StickyPartitioner, key_partition
from .security import ClientSecurity

__all__ = ["Producer", "RecordMetadata", "SendFuture"]

_IN_FLIGHT_PER_PARTITION = 5  # with idempotence: the broker remembers this many batches
_SEQ_MOD = 1 << 31
_ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1 with acks=0


class SendFuture:
    """The outcome of one ``send``: completes with its batch."""

    __slots__ = ("_batch_future", "_index", "partition", "topic")

    def __init__(self, batch_future: Future[int], index: int, topic: str, partition: int) -> None:
        self._batch_future = batch_future  # resolves to the batch's base offset
        self._index = index
        self.topic = topic
        self.partition = partition

    def result(self, timeout: float | None = None) -> RecordMetadata:
        base = self._batch_future.result(timeout)
        offset = base + self._index if base >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._batch_future.exception(timeout)

    def done(self) -> bool:
        return self._batch_future.done()

    def add_done_callback(self, fn: Callable[[SendFuture], None]) -> None:
        self._batch_future.add_done_callback(lambda _: fn(self))


def _batch_future(batch: ProducerBatch) -> Future[int]:
    if batch.future is None:
        batch.future = Future()
    future: Future[int] = batch.future
    return future


class Producer:
    """A thread-safe producer; see the module docstring. Use it as a context manager."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        acks: str | int = "all",
        linger_ms: int = 5,
        batch_bytes_max: int = 256 << 10,
        compression: str | None = None,
        buffer_bytes_max: int = 64 << 20,
        max_block_ms: int = 60_000,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1000,
        in_flight_requests_max: int = 5,
        enable_idempotence: bool | None = None,
        metadata_wait_ms: int = 5000,
        metadata: ClusterMetadata | None = None,
        security: ClientSecurity | None = None,
        client_id: str = "raftlog-producer",
        metrics: ClientMetrics | None = None,
    ) -> None:
        if acks not in _ACKS:
            raise ValueError(f"acks must be 'all', 1 or 0, not {acks!r}")
        if delivery_timeout_ms < request_timeout_ms + linger_ms:
            raise ValueError("delivery_timeout_ms must be >= request_timeout_ms + linger_ms")
        self.acks = _ACKS[acks]
        if enable_idempotence is None:
            enable_idempotence = self.acks == -1
        if enable_idempotence and self.acks != -1:
            raise ValueError("enable_idempotence needs acks='all' (a retry must find its batch)")
        self.idempotent = enable_idempotence
        self._producer_id = -1
        self._producer_epoch = -1
        self._next_seq: dict[tuple[str, int], int] = {}  # per partition: the next sequence
        self._acked_seq: dict[tuple[str, int], int] = {}  # per partition: acknowledged up to
        self._epoch_bump_needed = False  # a sequenced batch failed for good: gaps would follow
        self._fatal: RaftlogError | None = None  # PRODUCER_FENCED: this producer is a zombie
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.max_block_ms = max_block_ms
        self.metadata_wait_ms = metadata_wait_ms  # how long send() waits for an unknown topic
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.in_flight_requests_max = in_flight_requests_max
        self.metadata = metadata or ClusterMetadata(bootstrap, security=security)
        self._owns_metadata = metadata is None
        self._accumulator = RecordAccumulator(
            batch_bytes_max=batch_bytes_max,
            linger_ms=linger_ms,
            buffer_bytes_max=buffer_bytes_max,
            compression=compression,
            in_flight_max=_IN_FLIGHT_PER_PARTITION if enable_idempotence else 1,
        )
        self._partitioner = StickyPartitioner()
        self._partition_counts: dict[str, int] = {}  # topics never shrink: asked once each
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._responses: queue.SimpleQueue[tuple[list[ProducerBatch], int, Any]] = (
            queue.SimpleQueue()
        )
        self._in_flight: dict[int, int] = {}  # broker id → requests in flight
        self._closed = False
        self._refresh_wanted = False
        self.stats = {"requests": 0, "retries": 0, "batches": 0, "records": 0, "errors": 0}
        self.client_id = client_id
        self._metrics = metrics  # None: nothing recorded (client/metrics.py)
        self._sender = threading.Thread(target=self._run, name="raftlog-producer", daemon=True)
        self._sender.start()

    # ---- the application side ------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int | None = None,
    ) -> SendFuture:
        """Queue one record; the future gives (topic, partition, offset) once acknowledged."""
        if self._closed:
            raise ProducerClosedError("the producer is closed")
        if self._fatal is not None:
            raise self._fatal
        count = self._partition_counts.get(topic)
        if count is None:
            count = self.metadata.partition_count(topic, wait_s=self.metadata_wait_ms / 1000)
            self._partition_counts[topic] = count
        if partition is not None and not 0 <= partition < count:
            raise error_for(
                "UNKNOWN_TOPIC_OR_PARTITION", f"{topic} has {count} partitions, not {partition}"
            )
        now_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        headers = headers or ()
        deadline = time.monotonic() + self.max_block_ms / 1000
        with self._lock:
            if partition is None:
                if key is not None:
                    partition = key_partition(key, count)
                else:
                    partition = self._partitioner.partition(topic, count)
            tp = (topic, partition)
            size = self._accumulator.record_size(key, value, headers)
            while not self._accumulator.has_room(size):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BufferFullError(
                        f"the send buffer ({self._accumulator.buffer_bytes_max} bytes) stayed "
                        f"full for max_block_ms={self.max_block_ms}"
                    )
                self._accumulator.waiting_for_space += 1
                self._wake.notify()
                try:
                    self._space.wait(left)
                finally:
                    self._accumulator.waiting_for_space -= 1
            appended = self._accumulator.append(
                tp, key, value, headers, now_ms, int(time.monotonic() * 1000), size
            )
            assert appended is not None  # has_room was checked under the same lock
            batch, filled = appended
            index = batch.record_count - 1
            if filled:
                self._partitioner.next_batch(topic, count, partition)
            if filled or index == 0:
                self._wake.notify()  # a new batch: the sender recomputes when to send
            self.stats["records"] += 1
            return SendFuture(_batch_future(batch), index, topic, partition)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued now and wait until all of it is acknowledged or failed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            self._accumulator.flushing += 1
            self._wake.notify()
            try:
                while self._accumulator.pending():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise DeliveryTimeoutError("flush timed out")
                    self._idle.wait(left if left is not None else 1.0)
            finally:
                self._accumulator.flushing -= 1

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Flush (within ``timeout_s``), stop the sender, fail what is left."""
        if self._closed:
            return
        with contextlib.suppress(DeliveryTimeoutError):  # what is left fails below
            self.flush(timeout_s)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._space.notify_all()
        self._sender.join(timeout=5)
        with self._lock:
            for batch in self._accumulator.abort_all():
                self._fail(batch, ProducerClosedError("the producer closed before delivery"))
        if self._owns_metadata:
            self.metadata.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the sender thread ---------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def _run(self) -> None:
        while True:
            self._handle_responses()
            if self._refresh_wanted:
                self._refresh_wanted = False
                with contextlib.suppress(RaftlogError):  # the next attempt's backoff covers it
                    if not self.metadata.refresh(force=False):
                        self._refresh_wanted = True  # too soon after the last one: later
                moved = self.metadata.take_moved()
                if moved:
                    with self._lock:  # a new leader is known: retry there now, not after backoff
                        self._accumulator.expedite(moved, self._now_ms())
            if self.idempotent and not self._ensure_producer_id():
                continue
            with self._lock:
                if self._closed and not self._in_flight_total():
                    return
                now = self._now_ms()
                for batch in self._accumulator.expired(now, self.delivery_timeout_ms):
                    last = f" (last error: {batch.last_error})" if batch.last_error else ""
                    self._fail(
                        batch,
                        DeliveryTimeoutError(
                            f"not acknowledged within delivery_timeout_ms="
                            f"{self.delivery_timeout_ms}{last}"
                        ),
                    )
                ready = [] if self._epoch_bump_needed else self._accumulator.ready(now)
                by_leader: dict[int, tuple[str, list[ProducerBatch]]] = {}
                for batch in ready:
                    topic, index = batch.key
                    if batch.attempts == 0 and topic in self._partition_counts:
                        # KIP-480: keyless records stick to a partition until its batch goes
                        self._partitioner.next_batch(topic, self._partition_counts[topic], index)
                    if self.idempotent and batch.base_sequence < 0:
                        self._sequence(batch)  # once: a requeue keeps its sequence
                    found = self.metadata.leader_address(*batch.key)
                    if found is None or self._in_flight.get(found[0], 0) >= (
                        self.in_flight_requests_max
                    ):
                        if found is None:
                            self._refresh_wanted = True
                        self._accumulator.requeue(batch, now + self.retry_backoff_ms)
                        continue
                    by_leader.setdefault(found[0], (found[1], []))[1].append(batch)
                for leader_id in by_leader:
                    self._in_flight[leader_id] = self._in_flight.get(leader_id, 0) + 1
                if not by_leader and self._responses.empty():
                    wait_ms = self._accumulator.next_ready_ms(now) - now
                    if self._epoch_bump_needed:
                        wait_ms = min(wait_ms, self.retry_backoff_ms)
                    self._wake.wait(max(wait_ms, 1) / 1000)
            for leader_id, (address, batches) in by_leader.items():
                self._send(leader_id, address, batches)

    # ---- idempotence ----------------------------------------------------------------------------

    def _sequence(self, batch: ProducerBatch) -> None:
        """Give a batch its producer id, epoch and base sequence, once, before it is built: a
        retry sends the very same bytes, which is how the broker recognises it."""
        builder = batch.builder
        key = batch.key
        base = self._next_seq.get(key, 0)
        builder.producer_id = self._producer_id
        builder.producer_epoch = self._producer_epoch
        builder.base_sequence = base
        batch.base_sequence = base
        batch.producer_epoch = self._producer_epoch
        self._next_seq[key] = (base + batch.record_count) % _SEQ_MOD

    def _ensure_producer_id(self) -> bool:
        """A producer id (first use) or a new epoch (after a sequenced batch failed for good:
        its gap would make every later batch out of order). False: not yet, try again."""
        with self._lock:
            if self._producer_id >= 0 and not self._epoch_bump_needed:
                return True
            if self._epoch_bump_needed and self._in_flight_total():
                return True  # wait for what is in flight to come back before bumping
            if self._closed:
                return True
            request = broker_pb2.InitProducerIdRequest(
                producer_id=self._producer_id if self._epoch_bump_needed else -1,
                producer_epoch=self._producer_epoch,
            )
        answer = None
        for address in self.metadata.candidates():
            try:
                answer = self.metadata.stub(address).InitProducerId(
                    request, timeout=self.request_timeout_ms / 1000
                )
            except grpc.RpcError:
                continue
            if answer.error.code == 0:
                break
        if answer is not None and answer.error.code:
            error = error_for(answer.error.code, answer.error.message)
            if not error.retriable:
                # e.g. no ACL lets this principal write: what waits fails now instead of at
                # its delivery timeout; a later send asks again (an ACL may have been added)
                with self._lock:
                    for batch in self._accumulator.queued():
                        self._accumulator.remove(batch)
                        self._fail(batch, error, bump=False)
                time.sleep(self.retry_backoff_max_ms / 1000)
                return False
        if answer is None or answer.error.code:
            time.sleep(self.retry_backoff_ms / 1000)
            return False
        with self._lock:
            self._producer_id, self._producer_epoch = answer.producer_id, answer.producer_epoch
            if self._epoch_bump_needed:
                self._restart_sequences()
            self._epoch_bump_needed = False
            self._wake.notify()
        return True

    def _restart_sequences(self) -> None:
        """A new epoch starts every partition at sequence 0. Batches never sent are sequenced
        again; those sent before with no answer may or may not be in the log, and resending
        them under a new epoch could store them twice: they fail as unknown."""
        self._next_seq.clear()
        self._acked_seq.clear()
        for batch in self._accumulator.queued():
            if batch.attempts == 0:
                batch.built = None
                batch.base_sequence = -1  # sequenced again under the new epoch
                continue
            self._accumulator.remove(batch)
            last = f" (last error: {batch.last_error})" if batch.last_error else ""
            self._fail(
                batch,
                DeliveryTimeoutError(
                    f"outcome unknown: the producer epoch was reset after an earlier batch of "
                    f"this partition failed{last}"
                ),
                bump=False,
            )

    def _in_flight_total(self) -> int:
        return sum(self._in_flight.values())

    def _send(self, leader_id: int, address: str, batches: list[ProducerBatch]) -> None:
        request = broker_pb2.ProduceRequest(
            acks=self.acks,
            timeout_ms=self.request_timeout_ms,
            partitions=[
                broker_pb2.PartitionRecords(topic=b.key[0], partition=b.key[1], records=b.bytes())
                for b in batches
            ],
        )
        for batch in batches:
            batch.attempts += 1
        self.stats["requests"] += 1
        started = time.perf_counter()
        try:
            call = self.metadata.stub(address).Produce.future(
                request, timeout=self.request_timeout_ms / 1000 + 1
            )
        except Exception as exc:  # a channel that cannot even start the call
            self._responses.put((batches, leader_id, exc))
            self._notify()
            return

        def done(fut: grpc.Future) -> None:
            try:
                result: Any = fut.result()
            except grpc.RpcError as exc:
                result = exc
            if self._metrics is not None:
                self._metrics.request(self.client_id, "Produce", time.perf_counter() - started)
            self._responses.put((batches, leader_id, result))
            self._notify()

        call.add_done_callback(done)

    def _notify(self) -> None:
        with self._lock:
            self._wake.notify()

    def _handle_responses(self) -> None:
        while True:
            try:
                batches, leader_id, result = self._responses.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._in_flight[leader_id] = max(0, self._in_flight.get(leader_id, 0) - 1)
                if isinstance(result, broker_pb2.ProduceResponse):
                    # one answer per partition entry, in request order: a request may carry
                    # several batches of one partition (idempotence keeps up to 5 in flight)
                    answers = list(result.partitions)
                    for i, batch in enumerate(batches):
                        answer = answers[i] if i < len(answers) else None
                        if answer is not None and (answer.topic, answer.partition) != batch.key:
                            answer = None
                        self._complete(batch, answer)
                else:
                    detail = result.code() if isinstance(result, grpc.RpcError) else result
                    error = NetworkError(f"produce to broker {leader_id} failed: {detail}")
                    self._refresh_wanted = True
                    for batch in batches:
                        self._retry_or_fail(batch, error)
                self._space.notify_all()
                if not self._accumulator.pending():
                    self._idle.notify_all()

    def _complete(
        self, batch: ProducerBatch, answer: broker_pb2.PartitionProduceResult | None
    ) -> None:
        if answer is None:
            self._retry_or_fail(batch, NetworkError("the broker did not answer for the partition"))
            return
        if answer.error.code in (0, DuplicateSequenceNumberError.code):
            # a duplicate is a retry of a batch the broker already holds: these are its offsets
            if self.idempotent and batch.producer_epoch == self._producer_epoch:
                end = (batch.base_sequence + batch.record_count) % _SEQ_MOD
                self._acked_seq[batch.key] = end
            self._accumulator.done(batch)
            self.stats["batches"] += 1
            if self._metrics is not None:
                self._metrics.acknowledged(
                    self.client_id, batch.key[0], batch.record_count, len(batch.bytes())
                )
            future = _batch_future(batch)
            if not future.done():
                future.set_result(answer.base_offset if self.acks != 0 else -1)
            return
        error = error_for(answer.error.code, answer.error.message)
        if isinstance(error, ProducerFencedError):
            self._fatal = error
        elif isinstance(error, OutOfOrderSequenceNumberError) and (
            batch.producer_epoch == self._producer_epoch
            and batch.base_sequence != self._acked_seq.get(batch.key, 0)
        ):
            # an earlier batch of this partition is not acknowledged yet (it failed and is being
            # retried): this one must wait for it and go again
            self.stats["retries"] += 1
            if self._metrics is not None:
                self._metrics.retried(self.client_id)
            self._accumulator.requeue(batch, self._now_ms() + self.retry_backoff_ms)
            return
        if error.retriable:
            # stale metadata is the usual cause of a retriable error — also of a timeout from a
            # leader that was cut off and replaced (it cannot know): look again before retrying
            self._refresh_wanted = True
        self._retry_or_fail(batch, error)

    def _retry_or_fail(self, batch: ProducerBatch, error: RaftlogError) -> None:
        now = self._now_ms()
        batch.last_error = error
        age = now - batch.created_ms
        if error.retriable and age < self.delivery_timeout_ms and not self._closed:
            backoff = min(
                self.retry_backoff_max_ms, self.retry_backoff_ms * 2 ** max(batch.attempts - 1, 0)
            )
            backoff = int(backoff * random.uniform(0.8, 1.2))
            self.stats["retries"] += 1
            if self._metrics is not None:
                self._metrics.retried(self.client_id)
            self._accumulator.requeue(batch, now + backoff)
            return
        self._accumulator.done(batch)
        if error.retriable and not self._closed:
            # out of time, not out of luck: the same error the expiry path gives (the answer
            # only came back after the delivery timeout, e.g. on a loaded machine)
            self._fail(
                batch,
                DeliveryTimeoutError(
                    f"not acknowledged within delivery_timeout_ms={self.delivery_timeout_ms} "
                    f"(last error: {error})"
                ),
            )
            return
        self._fail(batch, error)

    def _fail(self, batch: ProducerBatch, error: BaseException, *, bump: bool = True) -> None:
        self.stats["errors"] += 1
        if self._metrics is not None:
            self._metrics.failed(self.client_id, batch.key[0], batch.record_count)
        if self.idempotent and bump and batch.base_sequence >= 0 and self._fatal is None:
            self._epoch_bump_needed = True  # its sequence range is a gap now
        future = _batch_future(batch)
        if not future.done():
            future.set_exception(error)
