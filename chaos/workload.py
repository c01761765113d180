"""The chaos workload: producers and consumers that record every operation in the history.

Jepsen's shape of a workload: each worker is one *process* of the history and does
one operation at a time — ``invoke``, then ``ok`` / ``fail`` / ``info``. The pure parts come
first (how a produce answer becomes an outcome, how polled records become a history value); the
IO shell after them (``Recorder``, ``ProducerWorker``, ``ConsumerWorker``).

**Why producers send their own Produce requests** instead of using ``raftlog.client.Producer``:
the Producer retries inside ``send`` and batches records, so a future that fails tells only the
*last* attempt's error — a record whose first attempt timed out after the append (maybe written)
and whose retry was refused with NOT_ENOUGH_REPLICAS (not written) would come back as a definite
failure and a later read of it would be a false aborted-read. Here one operation is exactly one
Produce request holding one batch of one record, sent once to the leader the worker's metadata
names, so the outcome of that one request *is* the outcome of the operation:

=====================================  =======  =========================================
answer                                 outcome  why
=====================================  =======  =========================================
NONE                                   ok       acknowledged by the ISR (acks=all) at base_offset
NOT_ENOUGH_REPLICAS                    fail     refused before the append (replica_manager)
UNKNOWN_TOPIC_OR_PARTITION,            fail     refused before the append: no such partition,
LEADER_NOT_AVAILABLE, CORRUPT_MESSAGE,          broker still loading, or a batch it validates
INVALID_RECORD, MESSAGE_TOO_LARGE, ...          and refuses as a whole before writing
no leader known (nothing sent)         fail     the request never left the worker
NOT_LEADER_OR_FOLLOWER                 info     also answered after the append when leadership
                                                moved while waiting for the ISR
REQUEST_TIMED_OUT,                     info     appended, not (yet) replicated: may survive
NOT_ENOUGH_REPLICAS_AFTER_APPEND
any other code, any transport error    info     when in doubt, unknown
(UNAVAILABLE, DEADLINE_EXCEEDED, ...)
=====================================  =======  =========================================

In the default mode (``once``) a send is never retried, so a value is written at most once by
the harness: a value at two offsets is the broker's duplicate, not ours.

**Retrying modes** test what the first mode cannot: how the broker treats a *retry*.

* ``idempotent`` — what the client's idempotent producer does (KIP-98): the worker takes a
  producer id from InitProducerId, stamps every batch with (producer id, epoch, sequence) and
  resends the *same* batch after any error until it is acknowledged or ``delivery_timeout_ms``
  runs out. A retry of a batch that was already appended must come back as
  DUPLICATE_SEQUENCE_NUMBER with its original offset (an ``ok`` at that offset), never be
  stored twice — the checker's duplicate count is the test.
* ``retry`` — the same retries without a producer id (Kafka before KIP-98). A batch appended
  whose answer was lost is appended again: the checker should report duplicates, which proves
  the check can fail.

A retried op's outcome combines its attempts (:func:`combine_attempts`): ``ok`` when one was
acknowledged, ``fail`` only when every attempt was refused before the append, else ``info``.
After an ``info`` the idempotent worker takes a new producer id (its sequence state is unknown:
the lost batch may or may not be in the log); after a ``fail`` the sequence is reused.

Threads: each worker is one thread; the ``Recorder`` is shared and takes one lock per op.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

import grpc

from raftlog.client import (
    ClientSecurity,
    ClusterMetadata,
    Consumer,
    LogTruncationError,
    RaftlogError,
)
from raftlog.client.errors import OffsetOutOfRangeError
from raftlog.proto import broker_pb2
from raftlog.proto.errors import ERRORS_BY_CODE
from raftlog.segments.batch import build_batch

from .history import (
    HistoryBuilder,
    Op,
    OpF,
    OpType,
    assign_value,
    dump_jsonl,
    read_value,
    send_value,
)

__all__ = [
    "DEFINITE_FAIL_CODES",
    "PRODUCER_MODES",
    "ConsumerWorker",
    "LiveCounters",
    "ProducerStats",
    "ProducerWorker",
    "Recorder",
    "SendResult",
    "ValueSource",
    "classify_code",
    "combine_attempts",
    "decode_value",
    "group_records",
    "init_producer_id",
    "key_of",
    "partitions_of_worker",
    "records_value",
    "send_result_from_answer",
]

# Answers the broker gives only before anything is appended (cluster/replica_manager.py,
# ``append``: topic lookup, readiness, the min-ISR check and batch validation all come first —
# the rules of cluster/replica_rules.py and cluster/produce.py).
DEFINITE_FAIL_CODES: frozenset[str] = frozenset(
    {
        "NOT_ENOUGH_REPLICAS",
        "UNKNOWN_TOPIC_OR_PARTITION",
        "LEADER_NOT_AVAILABLE",
        "INVALID_REQUIRED_ACKS",
        "CORRUPT_MESSAGE",
        "INVALID_RECORD",
        "MESSAGE_TOO_LARGE",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_TOPIC_EXCEPTION",
        "TOPIC_AUTHORIZATION_FAILED",
    }
)

NOT_SENT = "NOT_SENT"  # the error prefix of a send that never left the worker

PRODUCER_MODES: tuple[str, ...] = ("once", "idempotent", "retry")
DUPLICATE = "DUPLICATE_SEQUENCE_NUMBER"
# Answers after which the idempotent worker stops retrying and starts over with a new producer id.
_RESTART_CODES = ("OUT_OF_ORDER_SEQUENCE_NUMBER", "PRODUCER_FENCED", "UNKNOWN_PRODUCER_ID")


def key_of(topic: str, partition: int) -> str:
    """The history key of a topic-partition (also the record key the producers write)."""
    return f"{topic}-{partition}"


# ---- pure: outcomes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one send ended: ``offset`` only when ok; ``error`` names the cause otherwise."""

    type: OpType
    offset: int | None = None
    error: str | None = None
    duplicate: bool = False  # ok because the broker already had this batch (idempotent retry)


def classify_code(name: str) -> OpType:
    """A Produce answer's error name → the op's outcome (see the module docstring's table)."""
    if name == "NONE":
        return OpType.OK
    if name in DEFINITE_FAIL_CODES:
        return OpType.FAIL
    return OpType.INFO


def _code_name(code: int) -> str:
    if code == 0:
        return "NONE"
    found = ERRORS_BY_CODE.get(code)
    return found.name if found is not None else f"CODE_{code}"


def send_result_from_answer(
    answer: broker_pb2.ProduceResponse, topic: str, partition: int, *, idempotent: bool = False
) -> SendResult:
    """The outcome of a one-partition Produce request from its response.

    ``idempotent``: the batch carried a producer id, so DUPLICATE_SEQUENCE_NUMBER means "already
    stored at ``base_offset``" — an acknowledgement of the original (the client treats it so).
    """
    if answer.error.code:
        name = _code_name(answer.error.code)
        return SendResult(classify_code(name), error=f"{name}: {answer.error.message}")
    for result in answer.partitions:
        if result.topic == topic and result.partition == partition:
            name = _code_name(result.error.code)
            outcome = classify_code(name)
            if idempotent and name == DUPLICATE:
                outcome = OpType.OK
            if outcome is OpType.OK:
                if result.base_offset < 0:  # acknowledged without an offset: cannot place it
                    return SendResult(OpType.INFO, error="ok without an offset")
                return SendResult(
                    OpType.OK, offset=int(result.base_offset), duplicate=name == DUPLICATE
                )
            message = f"{name}: {result.error.message}" if result.error.message else name
            return SendResult(outcome, error=message)
    return SendResult(OpType.INFO, error="the response did not name the partition")


def combine_attempts(attempts: Sequence[SendResult]) -> SendResult:
    """One op's outcome from the attempts of a retried send (module docstring).

    ``ok`` if any attempt was acknowledged; ``fail`` only if every attempt was refused before
    the append (then nothing of it can be in the log); otherwise ``info`` — some attempt may
    have been appended.
    """
    if not attempts:
        raise ValueError("an op has at least one attempt")
    for attempt in attempts:
        if attempt.type is OpType.OK:
            return attempt
    last = attempts[-1]
    if all(a.type is OpType.FAIL for a in attempts):
        return last
    if last.type is OpType.INFO:
        return last
    maybe = next(a for a in reversed(attempts) if a.type is OpType.INFO)
    return SendResult(OpType.INFO, error=f"{maybe.error} (then {last.error})")


def rpc_error_result(exc: grpc.RpcError) -> SendResult:
    """A transport error after the request may have left: unknown."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else type(exc).__name__
    return SendResult(OpType.INFO, error=f"NETWORK: {name}")


def decode_value(raw: bytes | None) -> int | str:
    """A record value as the history stores it: the int the producer wrote, else its text
    (which no sent int equals, so the checker calls it unexpected)."""
    if raw is None:
        return "<null>"
    try:
        text = raw.decode("ascii")
        if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
            return int(text)
        return text
    except UnicodeDecodeError:
        return repr(raw)


class _RecordLike(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


ReadRecords = Mapping[str, Sequence[tuple[int, int | str]]]  # key → [(offset, value)]


def records_value(records: ReadRecords, start: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``history.read_value`` for decoded records: values that are not ints (a corrupt or
    foreign record) are kept as text so that the checker reports them as unexpected."""
    return read_value(cast("Mapping[str, Iterable[Sequence[int]]]", records), start)


def group_records(records: Iterable[_RecordLike]) -> dict[str, list[tuple[int, int | str]]]:
    """Polled records → key → [(offset, value)] in the order they came (the poll value shape).
    The key is where the record was read (its topic-partition), not the record's own key."""
    out: dict[str, list[tuple[int, int | str]]] = {}
    for r in records:
        out.setdefault(key_of(r.topic, r.partition), []).append((r.offset, decode_value(r.value)))
    return out


# ---- the recorder --------------------------------------------------------------------------


@dataclass(slots=True)
class LiveCounters:
    """What the live view shows; updated under the recorder's lock."""

    sends_ok: int = 0
    sends_fail: int = 0
    sends_info: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    records_read: int = 0
    truncations: int = 0  # consumer LogTruncationError / out-of-range repositions


class Recorder:
    """The history of one run, shared by every worker thread (one lock around each append).

    Each op is also written to ``out`` as a ``history.jsonl`` line when it is recorded, so a
    run that dies still leaves its history (the format tolerates a truncated last line).
    ``clock_ms`` is the run's clock: milliseconds since the run started.
    """

    ERRORS_KEPT = 64  # distinct error names counted for the live view

    def __init__(self, clock_ms: Callable[[], float], out: IO[str] | None = None) -> None:
        self._clock_ms = clock_ms
        self._out = out
        self._lock = threading.Lock()
        self._builder = HistoryBuilder()
        self.counters = LiveCounters()
        self.errors: collections.Counter[str] = collections.Counter()
        self._recent_sends: collections.deque[float] = collections.deque(maxlen=100_000)

    def now_ms(self) -> float:
        return self._clock_ms()

    def invoke(
        self,
        process: int,
        f: OpF,
        value: Mapping[str, Any] | None = None,
        *,
        node: int | None = None,
    ) -> Op:
        with self._lock:
            op = self._builder.invoke(process, f, value, node=node, time_ms=self._clock_ms())
            self._write(op)
            return op

    def complete(
        self,
        invocation: Op,
        type: OpType,
        value: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
    ) -> Op:
        with self._lock:
            now = self._clock_ms()
            op = self._builder.complete(invocation, type, value, error=error, time_ms=now)
            self._write(op)
            self._count(op, now)
            return op

    def note_truncation(self) -> None:
        with self._lock:
            self.counters.truncations += 1

    @property
    def ops(self) -> tuple[Op, ...]:
        with self._lock:
            return self._builder.ops

    def sends_per_s(self, window_ms: float = 2000.0) -> float:
        """Completed sends per second over the last ``window_ms``."""
        with self._lock:
            now = self._clock_ms()
            recent = self._recent_sends
            while recent and recent[0] < now - window_ms:
                recent.popleft()
            return len(recent) * 1000.0 / window_ms

    def snapshot_counters(self) -> tuple[LiveCounters, list[tuple[str, int]]]:
        with self._lock:
            c = self.counters
            copy = LiveCounters(
                c.sends_ok,
                c.sends_fail,
                c.sends_info,
                c.polls_ok,
                c.polls_failed,
                c.records_read,
                c.truncations,
            )
            return copy, self.errors.most_common(5)

    def flush(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.flush()

    def _write(self, op: Op) -> None:
        if self._out is not None:
            dump_jsonl([op], self._out)

    def _count(self, op: Op, now: float) -> None:
        c = self.counters
        if op.f is OpF.SEND:
            self._recent_sends.append(now)
            match op.type:
                case OpType.OK:
                    c.sends_ok += 1
                case OpType.FAIL:
                    c.sends_fail += 1
                case OpType.INFO:
                    c.sends_info += 1
                case OpType.INVOKE:
                    pass
        elif op.f is OpF.POLL:
            if op.type is OpType.OK:
                c.polls_ok += 1
                records = op.value.get("records", {})
                c.records_read += sum(len(r) for r in records.values())
            else:
                c.polls_failed += 1
        if op.error is not None:
            name = op.error.split(":", 1)[0]
            if name in self.errors or len(self.errors) < self.ERRORS_KEPT:
                self.errors[name] += 1


class ValueSource:
    """Unique integer values for the whole run (thread-safe)."""

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value


# ---- the producer --------------------------------------------------------------------------


def send_once(
    metadata: ClusterMetadata,
    topic: str,
    partition: int,
    value: int,
    *,
    timeout_ms: int,
    sequence: tuple[int, int, int] | None = None,
) -> SendResult:
    """One Produce request (acks=all, one record) to the partition's leader; never retried.

    ``sequence``: (producer id, epoch, base sequence) stamped on the batch (idempotent mode).
    """
    found = metadata.leader_address(topic, partition)
    if found is None:
        with contextlib.suppress(RaftlogError):
            metadata.refresh([topic], force=False)
        found = metadata.leader_address(topic, partition)
    if found is None:
        return SendResult(OpType.FAIL, error=f"{NOT_SENT}: no leader known")
    _, address = found
    key = key_of(topic, partition).encode()
    producer_id, producer_epoch, base_sequence = sequence if sequence is not None else (-1, -1, -1)
    batch = build_batch(
        [str(value).encode()],
        keys=[key],
        timestamp_ms=int(time.time() * 1000),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    request = broker_pb2.ProduceRequest(
        acks=-1,
        timeout_ms=timeout_ms,
        partitions=[broker_pb2.PartitionRecords(topic=topic, partition=partition, records=batch)],
    )
    try:
        answer = metadata.stub(address).Produce(request, timeout=timeout_ms / 1000 + 1.5)
    except grpc.RpcError as exc:
        return rpc_error_result(exc)
    except Exception as exc:  # anything after the request may have left: unknown
        return SendResult(OpType.INFO, error=f"CLIENT: {type(exc).__name__}: {exc}")
    return send_result_from_answer(answer, topic, partition, idempotent=sequence is not None)


def init_producer_id(metadata: ClusterMetadata, timeout_ms: int) -> tuple[int, int] | None:
    """A fresh (producer id, epoch) from any broker that answers, or None for now."""
    request = broker_pb2.InitProducerIdRequest(producer_id=-1, producer_epoch=-1)
    for address in metadata.candidates():
        try:
            answer = metadata.stub(address).InitProducerId(request, timeout=timeout_ms / 1000)
        except grpc.RpcError:
            continue
        if answer.error.code == 0 and answer.producer_id >= 0:
            return int(answer.producer_id), int(answer.producer_epoch)
    return None


@dataclass(slots=True)
class ProducerStats:
    """What a worker's retries did, for ``results.json`` (``workload.producer``)."""

    attempts: int = 0  # Produce requests sent or tried
    retried_ops: int = 0  # ops that needed more than one attempt
    dedupe_acks: int = 0  # DUPLICATE_SEQUENCE_NUMBER answers taken as the original's ack
    producer_ids: int = 0  # producer ids taken (one at start, one after each unknown outcome)

    def add(self, other: ProducerStats) -> None:
        self.attempts += other.attempts
        self.retried_ops += other.retried_ops
        self.dedupe_acks += other.dedupe_acks
        self.producer_ids += other.producer_ids


def partitions_of_worker(worker: int, workers: int, partitions: int) -> tuple[int, ...]:
    """The partitions worker ``worker`` of ``workers`` sends to: every partition has its own
    workers, so an op stuck on one partition (an idempotent send retries up to its delivery
    timeout) never stops the others being written — as a real producer's batches for one
    partition never hold up another's — and the availability figures see each partition."""
    groups = min(workers, partitions)
    return tuple(p for p in range(partitions) if p % groups == worker % groups)


class ProducerWorker(threading.Thread):
    """One history process sending unique values to random partitions of its own at a steady
    pace (``partitions_of_worker``)."""

    def __init__(
        self,
        process: int,
        recorder: Recorder,
        bootstrap: str,
        topic: str,
        partitions: int,
        values: ValueSource,
        rate_per_s: float,
        stop: threading.Event,
        rng: random.Random,
        *,
        security: ClientSecurity,
        request_timeout_ms: int = 2000,
        mode: str = "once",
        delivery_timeout_ms: int = 10_000,
        retry_backoff_ms: int = 100,
        own: Sequence[int] | None = None,
    ) -> None:
        if mode not in PRODUCER_MODES:
            raise ValueError(f"producer mode is one of {', '.join(PRODUCER_MODES)}, not {mode!r}")
        super().__init__(name=f"chaos-producer-{process}", daemon=True)
        self.mode = mode
        self.delivery_timeout_ms = delivery_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.stats = ProducerStats()
        self._producer: tuple[int, int] | None = None  # idempotent: (producer id, epoch)
        self._next_sequence: dict[int, int] = {}  # idempotent: partition -> next sequence
        self.process = process
        self.recorder = recorder
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.partitions = partitions
        self.own = tuple(own) if own is not None else tuple(range(partitions))
        self.values = values
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.stop_event = stop
        self.rng = rng
        self.request_timeout_ms = request_timeout_ms
        self.crash: BaseException | None = None

    def run(self) -> None:
        metadata = ClusterMetadata(self.bootstrap, request_timeout_s=2.0, security=self.security)
        try:
            self._loop(metadata)
        except BaseException as exc:  # reported by the runner; never silently lost
            self.crash = exc
        finally:
            metadata.close()

    def _loop(self, metadata: ClusterMetadata) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self.stop_event.wait(wait):
                return
            # keep the pace, but never burst to catch up more than one second of lost time
            next_at = max(next_at + self.interval_s, time.monotonic() - 1.0)
            if self.mode == "idempotent" and not self._ensure_producer(metadata):
                continue
            partition = self.rng.choice(self.own)
            key = key_of(self.topic, partition)
            value = self.values.take()
            op = self.recorder.invoke(self.process, OpF.SEND, send_value(key, value))
            result = self._send(metadata, partition, value)
            offset = result.offset if result.type is OpType.OK else None
            self.recorder.complete(
                op, result.type, send_value(key, value, offset), error=result.error
            )
            if result.type is not OpType.OK:
                with contextlib.suppress(RaftlogError):
                    metadata.refresh([self.topic], force=False)
                if result.error is not None and result.error.startswith(NOT_SENT):
                    self.stop_event.wait(0.1)  # no leader: do not spin

    def _ensure_producer(self, metadata: ClusterMetadata) -> bool:
        """Idempotent mode: hold a producer id before an op starts (False: none yet)."""
        if self._producer is not None:
            return True
        self._producer = init_producer_id(metadata, self.request_timeout_ms)
        if self._producer is None:
            self.stop_event.wait(0.2)  # no controller answers yet (a fault): do not spin
            return False
        self.stats.producer_ids += 1
        self._next_sequence.clear()
        return True

    def _send(self, metadata: ClusterMetadata, partition: int, value: int) -> SendResult:
        """One op: a single request (``once``), or the same batch again until acknowledged,
        refused for good, or ``delivery_timeout_ms`` (or the end of the workload) runs out."""
        sequence = None
        if self.mode == "idempotent":
            assert self._producer is not None
            producer_id, epoch = self._producer
            sequence = (producer_id, epoch, self._next_sequence.get(partition, 0))
        deadline = time.monotonic() + self.delivery_timeout_ms / 1000
        attempts: list[SendResult] = []
        while True:
            self.stats.attempts += 1
            attempt = send_once(
                metadata,
                self.topic,
                partition,
                value,
                timeout_ms=self.request_timeout_ms,
                sequence=sequence,
            )
            attempts.append(attempt)
            stop = attempt.type is OpType.OK or (attempt.error or "").startswith(_RESTART_CODES)
            if stop or self.mode == "once":
                break
            if time.monotonic() + self.retry_backoff_ms / 1000 >= deadline:
                break
            with contextlib.suppress(RaftlogError):
                metadata.refresh([self.topic], force=False)
            if self.stop_event.wait(self.retry_backoff_ms / 1000):
                break
        if len(attempts) > 1:
            self.stats.retried_ops += 1
        result = combine_attempts(attempts)
        if result.duplicate:
            self.stats.dedupe_acks += 1
        if sequence is not None:
            if result.type is OpType.OK:
                self._next_sequence[partition] = sequence[2] + 1
            elif result.type is OpType.INFO or (result.error or "").startswith(_RESTART_CODES):
                self._producer = None  # the sequence state is unknown: start over
        return result


# ---- the consumer --------------------------------------------------------------------------


class ConsumerWorker(threading.Thread):
    """One history process polling every partition from offset 0, with explicit positions.

    The consumer never repositions itself silently (``auto_offset_reset="none"``,
    ``on_truncation="raise"``): when the log was truncated below its position (possible only
    after an unclean election) or its position is past the leader's end, the poll is recorded
    as ``fail`` (it returned nothing), the worker seeks, and records an ``assign`` op with the
    new positions — so the checker sees the reposition instead of a skip or a rewind.
    """

    def __init__(
        self,
        process: int,
        recorder: Recorder,
        bootstrap: str,
        topic: str,
        partitions: int,
        stop: threading.Event,
        *,
        security: ClientSecurity,
        request_timeout_ms: int = 3000,
    ) -> None:
        super().__init__(name=f"chaos-consumer-{process}", daemon=True)
        self.process = process
        self.recorder = recorder
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.tps = [(topic, p) for p in range(partitions)]
        self.stop_event = stop
        self.request_timeout_ms = request_timeout_ms
        self.crash: BaseException | None = None

    def run(self) -> None:
        metadata = ClusterMetadata(self.bootstrap, request_timeout_s=2.0, security=self.security)
        consumer = Consumer(
            self.bootstrap,
            metadata=metadata,
            auto_offset_reset="none",
            on_truncation="raise",
            fetch_max_wait_ms=250,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            self._loop(consumer)
        except BaseException as exc:
            self.crash = exc
        finally:
            consumer.close()
            metadata.close()

    def _assign(self, consumer: Consumer, positions: Mapping[tuple[str, int], int]) -> None:
        op = self.recorder.invoke(self.process, OpF.ASSIGN, assign_value(_keys(self.tps)))
        try:
            consumer.assign(self.tps)
            for tp, offset in positions.items():
                consumer.seek(tp, offset)
        except Exception as exc:
            self.recorder.complete(op, OpType.INFO, error=f"{type(exc).__name__}: {exc}")
            raise
        body = assign_value(_keys(self.tps), {key_of(*tp): o for tp, o in positions.items()})
        self.recorder.complete(op, OpType.OK, body)

    def _loop(self, consumer: Consumer) -> None:
        for attempt in range(50):  # the topic's metadata may take a moment to reach every broker
            try:
                self._assign(consumer, dict.fromkeys(self.tps, 0))
                break
            except RaftlogError:
                if self.stop_event.wait(min(0.1 * (attempt + 1), 1.0)):
                    return
        else:
            raise RuntimeError("could not assign the partitions")
        while not self.stop_event.is_set():
            start = {key_of(*tp): consumer.position(tp) for tp in self.tps}
            op = self.recorder.invoke(self.process, OpF.POLL)
            try:
                records = consumer.poll(timeout_ms=500, max_records=2000)
            except LogTruncationError as exc:
                self.recorder.complete(op, OpType.FAIL, {}, error=f"TRUNCATED: {exc}")
                self.recorder.note_truncation()
                self._reposition(consumer, {(exc.topic, exc.partition): exc.divergent_offset})
                continue
            except OffsetOutOfRangeError as exc:
                self.recorder.complete(op, OpType.FAIL, {}, error=f"OFFSET_OUT_OF_RANGE: {exc}")
                self.recorder.note_truncation()
                self._reposition_to_ends(consumer)
                continue
            except Exception as exc:  # it may have moved the position: unknown
                self.recorder.complete(op, OpType.INFO, {}, error=f"{type(exc).__name__}: {exc}")
                self.stop_event.wait(0.1)
                continue
            self.recorder.complete(op, OpType.OK, records_value(group_records(records), start))

    def _reposition(self, consumer: Consumer, targets: Mapping[tuple[str, int], int]) -> None:
        positions = {tp: consumer.position(tp) for tp in self.tps}
        for tp, offset in targets.items():
            if tp in positions:
                positions[tp] = max(0, min(positions[tp], offset))
        self._assign(consumer, positions)

    def _reposition_to_ends(self, consumer: Consumer) -> None:
        """Every position past its leader's end (HW) comes back to that end."""
        positions = {tp: consumer.position(tp) for tp in self.tps}
        try:
            ends = consumer.end_offsets(self.tps)
        except RaftlogError:
            ends = {}
        targets = {tp: ends[tp] for tp in self.tps if tp in ends and positions[tp] > ends[tp]}
        self._reposition(consumer, targets)


def _keys(tps: Sequence[tuple[str, int]]) -> list[str]:
    return [key_of(*tp) for tp in tps]
