"""The chaos workload through a Kafka client (``raftlog chaos run --client kafka``): the same
history as workload.py's, written by confluent-kafka (librdkafka) against the brokers' Kafka
listeners, so the same checker judges both clients.

This is the IO shell (``KafkaProducerWorker``, ``KafkaConsumerWorker``); how a delivery report
and the library's log of each attempt become ok / fail / info, and consumed messages a poll op, is
kafka_outcomes.py's (pure, with the tables). ``confluent_kafka`` is imported only inside the
workers' functions, so a gRPC run never needs it.

**The producer** is librdkafka's idempotent producer (``enable.idempotence=true``, ``acks=all``,
bounded ``message.timeout.ms`` and ``retries``, ``linger.ms=0``), with ``debug=msg,eos`` and a
``logger`` (``LibraryLog``) through which the library's account of every attempt reaches
kafka_outcomes.py — confluent-kafka serves those lines from ``poll`` in the worker's thread, in
order with the delivery reports. Each worker sends one record at a time and waits (bounded) for
its report, as the gRPC workload's worker waits for its one request.

A fatal error (the idempotent producer lost its sequence state, e.g. OUT_OF_ORDER_SEQUENCE_NUMBER
from a leader that lacks the producer's last batches after an unclean election; confluent-kafka
raises it from ``poll``) drops the producer; the next op makes a new one (a new producer id), as
the gRPC idempotent worker takes a new producer id after an unknown outcome — so the partition
keeps being written, and a truncated tail meets new values at its offsets.

**The consumer** assigns every partition at offset 0 with ``auto.offset.reset=error`` and reads
with ``consume``; kafka_outcomes.py says how a truncation or an offset out of range stops a
partition and where the worker re-assigns it (an ``assign`` op in the history).

Threads: each worker is one thread and owns its librdkafka handle; the ``Recorder`` is shared.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from raftlog.client import ClientSecurity

from .history import OpF, OpType, assign_value, send_value
from .kafka_outcomes import (
    AttemptLog,
    Polled,
    Reposition,
    parse_debug_line,
    poll_outcome,
    reposition_targets,
    send_result_from_report,
)
from .workload import (
    NOT_SENT,
    ProducerStats,
    Recorder,
    SendResult,
    ValueSource,
    key_of,
    records_value,
)

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, Producer

__all__ = [
    "KAFKA_CLIENT",
    "KafkaConsumerWorker",
    "KafkaProducerWorker",
    "LibraryLog",
    "kafka_client_available",
    "kafka_client_versions",
    "kafka_config",
]

logger = logging.getLogger(__name__)

KAFKA_CLIENT = "confluent_kafka"  # the distribution is confluent-kafka
KAFKA_RETRIES = 3  # resends of one batch inside librdkafka (>= 1 with idempotence)
REPORT_MARGIN_S = 2.0  # beyond message.timeout.ms + request.timeout.ms, a report is overdue
POLL_RECORDS_MAX = 2000
POLL_TIMEOUT_S = 0.5
WATERMARK_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 2.0


# ---- IO: the library ----------------------------------------------------------------------------


def kafka_client_available() -> str | None:
    """None when confluent-kafka can be imported, else why a Kafka run cannot start."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        return f"--client kafka needs confluent-kafka (pip install confluent-kafka): {exc}"
    return None


def kafka_client_versions() -> dict[str, str]:
    """The client library's versions, for the run's report."""
    import confluent_kafka

    version = confluent_kafka.version()  # a str in 2.16, a (str, int) before
    return {
        "confluent_kafka": version if isinstance(version, str) else str(version[0]),
        "librdkafka": str(confluent_kafka.libversion()[0]),
    }


@functools.cache
def _codes_by_text() -> dict[str, int]:
    """librdkafka's error description (``rd_kafka_err2str``, what its debug lines print) → code;
    the descriptions are unique."""
    from confluent_kafka import KafkaError

    codes = {
        value
        for name, value in vars(KafkaError).items()
        if name.lstrip("_").isupper() and isinstance(value, int)
    }
    return {KafkaError(code).str(): code for code in codes}


def kafka_config(
    bootstrap: str, security: ClientSecurity, client_id: str, *, request_timeout_ms: int
) -> dict[str, Any]:
    """What producers and consumers share: the brokers' Kafka listeners, the harness's
    identity (its client certificate: ``User:chaos``), and timeouts short enough to notice a
    paused broker or a dead connection within a fault."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        # a request without an answer this long is failed by the client (a paused broker)
        "socket.timeout.ms": request_timeout_ms + 1500,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    if security.username is not None:
        raise ValueError("the chaos Kafka client authenticates with a certificate, not SASL")
    if security.ca_pem is None:
        config["security.protocol"] = "plaintext"
        return config
    config["security.protocol"] = "ssl"
    config["ssl.ca.pem"] = security.ca_pem.decode()
    if security.cert_pem is not None and security.key_pem is not None:
        config["ssl.certificate.pem"] = security.cert_pem.decode()
        config["ssl.key.pem"] = security.key_pem.decode()
    return config


class LibraryLog:
    """librdkafka's log of one worker's handles (their ``logger``): debug lines fold into
    ``attempts`` (producers); the rest is counted per facility (``counts``, for results.json —
    PROTOERR counts answers the client could not parse) and written to the harness log, at most
    ``LINES_MAX`` lines per facility (a broken answer is re-fetched in a tight loop).
    confluent-kafka calls ``log`` from ``poll`` / ``consume`` in the worker's thread; the lock
    covers a handle's creation and destruction, when librdkafka may call from its own threads."""

    LINES_MAX = 50

    def __init__(self, worker: str, attempts: AttemptLog | None) -> None:
        self.worker = worker
        self.attempts = attempts
        self.counts: dict[str, int] = {}
        self._codes = _codes_by_text() if attempts is not None else {}
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility, text = (str(args[0]), str(args[-1])) if len(args) >= 2 else ("", fmt)
        with self._lock:
            if level <= logging.DEBUG:
                if self.attempts is not None:
                    parse_debug_line(facility, text, self._codes, self.attempts)
                return
            seen = self.counts[facility] = self.counts.get(facility, 0) + 1
        if seen <= self.LINES_MAX:
            logger.log(level, "%s: librdkafka %s: %s", self.worker, facility, text)
            if seen == self.LINES_MAX:
                logger.log(
                    level, "%s: librdkafka %s: further lines counted only", self.worker, facility
                )


# ---- IO: the producer ---------------------------------------------------------------------------


class KafkaProducerWorker(threading.Thread):
    """One history process sending unique values through librdkafka's idempotent producer to
    random partitions of its own, one at a time, at a steady pace (module docstring)."""

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
        delivery_timeout_ms: int = 10_000,
        own: Sequence[int] | None = None,
    ) -> None:
        super().__init__(name=f"chaos-kafka-producer-{process}", daemon=True)
        self.process = process
        self.recorder = recorder
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.own = tuple(own) if own is not None else tuple(range(partitions))
        self.values = values
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.stop_event = stop
        self.rng = rng
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.report_wait_s = (delivery_timeout_ms + request_timeout_ms) / 1000 + REPORT_MARGIN_S
        self.stats = ProducerStats()
        self.attempts = AttemptLog()
        self.library_log = LibraryLog(self.name, self.attempts)
        self._producer: Producer | None = None
        self._fatal = False  # the handle reported a fatal error: make a new one
        self.crash: BaseException | None = None

    def config(self) -> dict[str, Any]:
        return {
            **kafka_config(
                self.bootstrap,
                self.security,
                self.name,
                request_timeout_ms=self.request_timeout_ms,
            ),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "compression.type": "none",
            "message.timeout.ms": self.delivery_timeout_ms,
            "request.timeout.ms": self.request_timeout_ms,
            "retries": KAFKA_RETRIES,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "debug": "msg,eos",  # the attempt log (module docstring)
            "logger": self.library_log,
            "error_cb": self._on_error,
        }

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the runner; never silently lost
            self.crash = exc
        finally:
            self._drop_producer()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self.stop_event.wait(wait):
                return
            next_at = max(next_at + self.interval_s, time.monotonic() - 1.0)
            partition = self.rng.choice(self.own)
            key = key_of(self.topic, partition)
            value = self.values.take()
            op = self.recorder.invoke(self.process, OpF.SEND, send_value(key, value))
            result = self._send(partition, value)
            offset = result.offset if result.type is OpType.OK else None
            self.recorder.complete(
                op, result.type, send_value(key, value, offset), error=result.error
            )
            if result.error is not None and result.error.startswith(NOT_SENT):
                self.stop_event.wait(0.1)  # the library refused it at once: do not spin

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
        logger.info("%s: librdkafka error %s: %s", self.name, error.name(), error.str())

    def _ready(self) -> Producer:
        if self._fatal:
            self._drop_producer()
        if self._producer is None:
            from confluent_kafka import Producer

            self._fatal = False
            self._producer = Producer(self.config())
        return self._producer

    def _drop_producer(self) -> None:
        """Forget the handle: whatever it still holds is purged (those sends were already
        recorded, as info). Bounded: a purge and a short flush."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(CLOSE_TIMEOUT_S)
        except Exception as exc:  # closing down: say it, go on
            logger.info("%s: dropping the producer: %r", self.name, exc)

    def _send(self, partition: int, value: int) -> SendResult:
        """One op: hand the record to the library, wait (bounded) for its delivery report."""
        from confluent_kafka import KafkaException

        producer = self._ready()
        self.attempts.clear()
        reports: list[tuple[KafkaError | None, Message]] = []
        try:
            producer.produce(
                self.topic,
                value=str(value).encode(),
                key=key_of(self.topic, partition).encode(),
                partition=partition,
                on_delivery=lambda error, message: reports.append((error, message)),
            )
        except (BufferError, KafkaException) as exc:  # never entered the library
            return SendResult(OpType.FAIL, error=f"{NOT_SENT}: {exc}")
        deadline = time.monotonic() + self.report_wait_s
        while not reports and time.monotonic() < deadline:
            try:
                producer.poll(0.05)
            except KafkaException as exc:
                # confluent-kafka raises the handle's fatal error from poll (error_cb never sees
                # it); the record's own report (_FATAL, or the error that caused it) follows
                logger.info("%s: %r", self.name, exc)
                self._fatal = True
        sent, answers = self.attempts.sent, list(self.attempts.answers)
        self.stats.attempts += max(sent, 1)
        self.stats.retried_ops += int(sent > 1)
        self.stats.producer_ids = self.attempts.producer_ids
        if not reports:
            self._drop_producer()
            return SendResult(
                OpType.INFO, error=f"NO_REPORT: no delivery report in {self.report_wait_s:g} s"
            )
        error, message = reports[0]
        result = send_result_from_report(
            None if error is None else error.code(), message.offset(), sent=sent, answers=answers
        )
        if error is not None and error.fatal():
            self._fatal = True
        if result.duplicate:
            self.stats.dedupe_acks += 1
        if result.type is OpType.OK and message.partition() != partition:
            return SendResult(
                OpType.INFO, error=f"reported in partition {message.partition()}, not {partition}"
            )
        return result


# ---- IO: the consumer ---------------------------------------------------------------------------


def _polled(message: Message) -> Polled:
    error = message.error()
    return Polled(
        message.topic(),
        message.partition(),
        message.offset(),
        message.value(),
        None if error is None else error.code(),
        "" if error is None else error.str(),
    )


class KafkaConsumerWorker(threading.Thread):
    """One history process reading every partition from offset 0 through librdkafka, with
    explicit positions (module docstring)."""

    ERRORS_LOGGED = 20  # error events written to the harness log, then only counted

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
        super().__init__(name=f"chaos-kafka-consumer-{process}", daemon=True)
        self.process = process
        self.recorder = recorder
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.partitions = tuple(range(partitions))
        self.stop_event = stop
        self.request_timeout_ms = request_timeout_ms
        self.positions: dict[int, int] = {}  # partition → the next offset this worker reads
        self.event_errors: dict[str, int] = {}
        self.library_log = LibraryLog(self.name, None)
        self.crash: BaseException | None = None

    def config(self) -> dict[str, Any]:
        return {
            **kafka_config(
                self.bootstrap,
                self.security,
                self.name,
                request_timeout_ms=self.request_timeout_ms,
            ),
            # required by the library; nothing is committed and no group is joined (assign)
            "group.id": f"raftlog-chaos-{self.name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 250,
            "fetch.error.backoff.ms": 100,
            "isolation.level": "read_uncommitted",
            "check.crcs": True,
            "logger": self.library_log,
        }

    def run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(self.config())
        try:
            self._loop(consumer)
        except BaseException as exc:
            self.crash = exc
        finally:
            try:
                consumer.close()
            except Exception as exc:
                logger.info("%s: closing the consumer: %r", self.name, exc)

    def _assign(self, consumer: Consumer, positions: Mapping[int, int]) -> None:
        from confluent_kafka import TopicPartition

        keys = [key_of(self.topic, p) for p in self.partitions]
        op = self.recorder.invoke(self.process, OpF.ASSIGN, assign_value(keys))
        try:
            consumer.assign([TopicPartition(self.topic, p, positions[p]) for p in self.partitions])
        except Exception as exc:
            self.recorder.complete(op, OpType.INFO, error=f"{type(exc).__name__}: {exc}")
            raise
        self.positions = {p: positions[p] for p in self.partitions}
        at = {key_of(self.topic, p): o for p, o in self.positions.items()}
        self.recorder.complete(op, OpType.OK, assign_value(keys, at))

    def _loop(self, consumer: Consumer) -> None:
        self._assign(consumer, dict.fromkeys(self.partitions, 0))
        while not self.stop_event.is_set():
            start = {key_of(self.topic, p): o for p, o in self.positions.items()}
            op = self.recorder.invoke(self.process, OpF.POLL)
            try:
                messages = consumer.consume(num_messages=POLL_RECORDS_MAX, timeout=POLL_TIMEOUT_S)
            except Exception as exc:  # what it took from the library is unknown: seek ours
                self.recorder.complete(op, OpType.INFO, {}, error=f"{type(exc).__name__}: {exc}")
                self.stop_event.wait(0.1)
                self._assign(consumer, self.positions)
                continue
            outcome = poll_outcome([_polled(m) for m in messages], self.topic, self.positions)
            self.positions = outcome.positions
            self._note_errors(outcome.errors)
            if outcome.records or not outcome.repositions:
                value = records_value(outcome.records, start)
                self.recorder.complete(op, OpType.OK, value, error=outcome.error)
            else:  # stopped, nothing read: a failed poll, as the gRPC consumer records it
                self.recorder.complete(op, OpType.FAIL, {}, error=outcome.error)
            if outcome.repositions:
                self.recorder.note_truncation()
                self._reposition(consumer, outcome.repositions)

    def _note_errors(self, errors: Sequence[str]) -> None:
        for text in errors:
            name = text.split(":", 1)[0]
            self.event_errors[name] = self.event_errors.get(name, 0) + 1
            if sum(self.event_errors.values()) <= self.ERRORS_LOGGED:
                logger.info("%s: consumer error event %s", self.name, text)

    def _reposition(self, consumer: Consumer, repositions: Mapping[int, Reposition]) -> None:
        from confluent_kafka import TopicPartition

        watermarks: dict[int, tuple[int, int]] = {}
        for partition in repositions:
            try:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=WATERMARK_TIMEOUT_S
                )
            except Exception:  # a fault: keep the position, the next poll asks again
                marks = None
            if marks is not None:
                watermarks[partition] = (int(marks[0]), int(marks[1]))
        self._assign(consumer, reposition_targets(self.positions, repositions, watermarks))
