"""The Kafka-protocol step of ``make bench`` (``bench/cluster.py``): librdkafka's producer
(confluent-kafka) against the brokers' Kafka listeners, on the cluster the rest of the run uses.

Why: our Python ``Producer`` spends a few µs of CPU per record and shares two cores with three
brokers, so the produce figures measure client and brokers together. librdkafka does its
batching, framing and TLS in C threads; what it reaches is closer to what the brokers can take
when the client is not the limit (through the Kafka listener, not gRPC). Each size is printed
with the ratio to our Python Producer's figure at that size from the same run.

The producer runs in a child process (this module with ``--child``; ``bench.common.Child``'s
JSON lines), so that its CPU — Python's produce loop plus librdkafka's threads — is read from
``/proc`` as the client's, beside the brokers', as for the Python rounds. Its spec carries the
librdkafka properties: TLS as file paths (the cluster CA, client ``admin``'s certificate and
key), never a key itself. One op, ``produce``, is one round on a fresh ``Producer``:

1. warm-up, before the clock: one record to each partition, flushed (metadata, connections,
   the idempotent producer id);
2. the timed part: ``produce()`` of a ``make_payloads`` value (the Python rounds' payloads)
   until ``seconds`` or ``records_max``; a full queue (``QUEUE_KBYTES_MAX``) is waited on with
   ``poll``, inside the same deadline; then ``flush``. Only failed deliveries call back
   (``delivery.report.only.error``: no Python on the success path), so acknowledged = sent −
   failed, and it counts only once the queue is empty; what a flush leaves is counted as
   unanswered, then purged (each purged record fails);
3. low and high watermarks of every partition by Kafka ListOffsets.

The parent then reads the topic's offsets again through the brokers' own gRPC API, and
``round_problems`` (pure) holds the round to: no delivery error, no fatal librdkafka error,
nothing unanswered, and acknowledged records (warm-up included, summed over the topic's rounds)
equal to what both ListOffsets say the topic holds. A round with a problem fails its size: no
figure, a failure in the report (the run exits 1). Each size is best of ``rounds`` good rounds.

Bounds: a round sends for ``seconds`` at most and ``records_max`` records; warm-up, flush,
purge and the watermarks each have a timeout, and so has the parent's wait for the answer
(``round_timeout_s``). librdkafka's ``message.timeout.ms`` fails a record stuck longer than
``MESSAGE_TIMEOUT_MS`` (inside the flush timeout), so a flush ends with every record answered.
The child is stopped by its PID on every way out.

``listener_log_summary`` (pure) reads the brokers' log lines written during the step: the Kafka
listener's warnings, the connections it closed, and ERROR lines of any logger.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from raftlog.client.perf_results import MB, make_payloads

from .common import BenchError, Child, Emitter, serve
from .machine import CpuMeter, cpu_us_per_record

__all__ = [
    "FLUSH_TIMEOUT_S",
    "KAFKA_SIZES",
    "KafkaRound",
    "KafkaStep",
    "kafka_figures",
    "kafka_settings",
    "kafka_topic",
    "listener_log_summary",
    "main",
    "measure_kafka_producer",
    "round_problems",
    "round_timeout_s",
    "to_python_ratio",
]

KAFKA_SIZES: tuple[tuple[str, int], ...] = (("100b", 100), ("16k", 16 * 1024))
# librdkafka's queue.buffering.max.kbytes, 16 MiB: four times what 3 brokers × 5 requests in
# flight × 256 KiB batches hold, and small enough that the flush after the clock stops drains in
# seconds (the queue's default, 1 GiB, would take minutes at 16 KiB records)
QUEUE_KBYTES_MAX = 16 << 10
MESSAGE_TIMEOUT_MS = 20_000  # a record not acknowledged by then fails (inside FLUSH_TIMEOUT_S)
FLUSH_TIMEOUT_S = 30.0
WARM_UP_TIMEOUT_S = 15.0
PURGE_TIMEOUT_S = 5.0
WATERMARK_TIMEOUT_S = 10.0
_REPLY_MARGIN_S = 15.0  # child start-up, producer creation, metadata
_FULL_QUEUE_POLL_S = 0.005
_POLL_EVERY_RECORDS = 8192  # serve error callbacks now and then; the success path has none
_ERRORS_KEPT = 20  # distinct error messages counted; the rest under "(other)"
_LOG_BYTES_MAX = 8 << 20  # of each broker's log, from where the step began
_LOG_SAMPLES = 8
_MODULE = "bench.kafka_producer"


def kafka_topic(label: str) -> str:
    return f"bench-kafka-{label}"


def kafka_settings(linger_ms: int, batch_bytes: int) -> dict[str, Any]:
    """The librdkafka properties of every round (beside the connection's): acks=all and
    idempotence, as the Python rounds; their linger and batch size; no compression."""
    return {
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "none",
        "linger.ms": linger_ms,
        "batch.size": batch_bytes,
        "queue.buffering.max.kbytes": QUEUE_KBYTES_MAX,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        "delivery.report.only.error": True,
    }


def round_timeout_s(seconds: float) -> float:
    """How long the parent waits for one round's answer: every bounded wait of the round."""
    waits = WARM_UP_TIMEOUT_S + FLUSH_TIMEOUT_S + PURGE_TIMEOUT_S + WATERMARK_TIMEOUT_S
    return seconds + waits + _REPLY_MARGIN_S


# ---- one round and its check (pure) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaRound:
    """What the child reports of one round (its JSON answer to ``produce``)."""

    record_size: int
    sent: int  # handed to librdkafka in the timed part
    records: int  # of those, acknowledged: sent - failed - still queued after the purge
    warm_up_records: int  # acknowledged before the clock, one a partition
    failed: int  # delivery reports with an error (never counted in records)
    unanswered: int  # neither acknowledged nor failed when the flush gave up (purged: failed)
    elapsed_s: float  # first send of the timed part → the flush returned
    client_cpu_s: float  # the child's CPU over the timed part, every thread
    watermarks: tuple[tuple[int, int], ...]  # (low, high) a partition, by Kafka ListOffsets
    errors: dict[str, int] = field(default_factory=dict)  # delivery error → count
    client_errors: dict[str, int] = field(default_factory=dict)  # librdkafka error_cb → count
    fatal: str | None = None  # a fatal librdkafka error, or a warm-up that failed

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.records_per_s * self.record_size / MB

    @property
    def topic_records(self) -> int:
        """What Kafka ListOffsets says the topic holds."""
        return sum(high - low for low, high in self.watermarks)

    def line(self) -> str:
        failed = f", [red]{self.failed:,} failed[/red]" if self.failed else ""
        return (
            f"{self.records:,} records acknowledged in {self.elapsed_s:.2f} s{failed}: "
            f"{self.records_per_s:,.0f} records/s ({self.mb_per_s:,.2f} MB/s)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "record_size": self.record_size,
            "sent": self.sent,
            "records": self.records,
            "warm_up_records": self.warm_up_records,
            "failed": self.failed,
            "unanswered": self.unanswered,
            "elapsed_s": round(self.elapsed_s, 4),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "watermarks": [list(pair) for pair in self.watermarks],
            "errors": self.errors,
            "client_errors": self.client_errors,
            "fatal": self.fatal,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> KafkaRound:
        return cls(
            record_size=int(body["record_size"]),
            sent=int(body["sent"]),
            records=int(body["records"]),
            warm_up_records=int(body["warm_up_records"]),
            failed=int(body["failed"]),
            unanswered=int(body["unanswered"]),
            elapsed_s=float(body["elapsed_s"]),
            client_cpu_s=float(body["client_cpu_s"]),
            watermarks=tuple((int(low), int(high)) for low, high in body["watermarks"]),
            errors={str(k): int(v) for k, v in body.get("errors", {}).items()},
            client_errors={str(k): int(v) for k, v in body.get("client_errors", {}).items()},
            fatal=body.get("fatal"),
        )


def _top(counts: Mapping[str, int], n: int = 3) -> str:
    return "; ".join(f"{k} ×{v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n])


def round_problems(result: KafkaRound, acked_before: int, topic_records: int) -> list[str]:
    """Why a round's figure cannot be counted; empty when it can. ``acked_before``: records
    the topic's earlier rounds had acknowledged (warm-ups included); ``topic_records``: what the
    topic holds now by the brokers' own (gRPC) ListOffsets."""
    problems = []
    if result.fatal is not None:
        problems.append(f"librdkafka: {result.fatal}")
    if result.failed:
        problems.append(f"{result.failed:,} delivery errors ({_top(result.errors)})")
    if result.unanswered:
        problems.append(
            f"{result.unanswered:,} records neither acknowledged nor failed after the flush"
        )
    if result.records <= 0:
        problems.append("no record was acknowledged")
    acked = acked_before + result.warm_up_records + result.records
    if result.topic_records != acked:
        problems.append(
            f"{acked:,} records acknowledged, but Kafka ListOffsets says the topic holds "
            f"{result.topic_records:,}"
        )
    if topic_records != acked:
        problems.append(
            f"{acked:,} records acknowledged, but the brokers' gRPC ListOffsets says the topic "
            f"holds {topic_records:,}"
        )
    return problems


def to_python_ratio(kafka_rps: float, python_rps: float | None) -> float | None:
    """librdkafka's records/s over our Python Producer's at the same size (None without it)."""
    if python_rps is None or python_rps <= 0:
        return None
    return round(kafka_rps / python_rps, 2)


# ---- what the brokers' logs say (pure) -----------------------------------------------------------

# cluster/__main__.py's format: "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
_LISTENER_LOGGERS = "raftlog.cluster.kafka"  # kafka_listener, kafka_apis, kafka_sasl


def listener_log_summary(lines: Iterable[str]) -> dict[str, Any]:
    """Of broker log lines: the Kafka listener's warnings (``raftlog.cluster.kafka*`` at
    WARNING), the connections it closed on purpose (its "closing ..." lines: a request it
    refused), ERROR or CRITICAL lines of any logger (an unexpected exception may surface through
    asyncio's), and up to ``_LOG_SAMPLES`` distinct such lines."""
    summary: dict[str, Any] = {"warnings": 0, "closed_connections": 0, "errors": 0, "samples": []}
    for line in lines:
        match = _LOG_LINE.match(line.rstrip("\n"))
        if match is None:
            continue  # a traceback's continuation, or another format
        level, logger = match["level"], match["logger"]
        listener = logger.startswith(_LISTENER_LOGGERS)
        if level in ("ERROR", "CRITICAL"):
            summary["errors"] += 1
        elif listener and level == "WARNING":
            summary["warnings"] += 1
        elif listener and match["message"].startswith("Kafka listener: closing"):
            summary["closed_connections"] += 1
        else:
            continue
        sample = f"{level} {logger}: {match['message']}"[:300]
        if sample not in summary["samples"] and len(summary["samples"]) < _LOG_SAMPLES:
            summary["samples"].append(sample)
    return summary


# ---- the child: one librdkafka producer ----------------------------------------------------------


def _count(counts: dict[str, int], message: str) -> None:
    key = message if message in counts or len(counts) < _ERRORS_KEPT else "(other)"
    counts[key] = counts.get(key, 0) + 1


def _produce(
    connection: dict[str, Any], settings: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any]:
    """One round (the module docstring's steps 1–3); its ``KafkaRound`` as JSON."""
    from confluent_kafka import KafkaError, Producer

    topic, record_size = str(request["topic"]), int(request["record_size"])
    seconds, records_max = float(request["seconds"]), int(request["records_max"])
    errors: dict[str, int] = {}
    client_errors: dict[str, int] = {}
    fatal: list[str] = []

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        if error is not None:  # only failures call back (delivery.report.only.error)
            _count(errors, str(error))

    def on_error(error: KafkaError) -> None:
        _count(client_errors, str(error))
        if error.fatal() and not fatal:
            fatal.append(str(error))

    config = {**connection, **settings, "on_delivery": on_delivery, "error_cb": on_error}
    producer = Producer(config)
    sent = warm_up_records = failed_warm_up = unanswered = remaining = 0
    elapsed_s = cpu_s = 0.0
    partitions = 0
    try:
        described = producer.list_topics(topic, timeout=WARM_UP_TIMEOUT_S).topics[topic]
        if described.error is not None:
            raise RuntimeError(f"metadata of {topic}: {described.error}")
        partitions = len(described.partitions)
        payloads = make_payloads(record_size)
        mask = len(payloads) - 1  # a power of two
        for partition in range(partitions):
            producer.produce(topic, payloads[0], partition=partition)
        left = producer.flush(WARM_UP_TIMEOUT_S)
        failed_warm_up = sum(errors.values())
        if (left or failed_warm_up) and not fatal:
            fatal.append(f"warm-up: {left} unanswered, {failed_warm_up} failed ({_top(errors)})")
        if not fatal:
            warm_up_records = partitions
            produce, poll, clock = producer.produce, producer.poll, time.perf_counter
            cpu_before = time.process_time()
            started = clock()
            deadline = started + seconds
            while sent < records_max and not fatal and clock() < deadline:
                try:
                    produce(topic, payloads[sent & mask])
                except BufferError:  # the queue is full: serve callbacks, wait a little
                    poll(_FULL_QUEUE_POLL_S)
                    continue
                sent += 1
                if sent % _POLL_EVERY_RECORDS == 0:
                    poll(0)
            unanswered = producer.flush(FLUSH_TIMEOUT_S)
            elapsed_s = clock() - started
            cpu_s = time.process_time() - cpu_before
    finally:
        if len(producer):  # what a flush left (or an exception): never waited on unbounded
            producer.purge()  # each purged record fails (a delivery error) ...
            remaining = producer.flush(PURGE_TIMEOUT_S)  # ... once its report is served
        producer.close()
    failed = sum(errors.values())
    watermarks = _watermarks(connection, topic, partitions)
    return KafkaRound(
        record_size=record_size,
        sent=sent,
        records=max(0, sent - (failed - failed_warm_up) - remaining),
        warm_up_records=warm_up_records,
        failed=failed,
        unanswered=unanswered,
        elapsed_s=elapsed_s,
        client_cpu_s=cpu_s,
        watermarks=watermarks,
        errors=errors,
        client_errors=client_errors,
        fatal=fatal[0] if fatal else None,
    ).to_json()


def _watermarks(
    connection: dict[str, Any], topic: str, partitions: int
) -> tuple[tuple[int, int], ...]:
    """(low, high) of every partition by Kafka ListOffsets, through a consumer that joins no
    group (it only names one, as librdkafka requires)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**connection, "group.id": "bench-kafka-watermarks"})
    try:
        pairs = []
        for partition in range(partitions):
            answer = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S
            )
            if answer is None:
                raise RuntimeError(f"no watermarks of {topic}/{partition} within the timeout")
            pairs.append((int(answer[0]), int(answer[1])))
        return tuple(pairs)
    finally:
        consumer.close()


def _child(spec: dict[str, Any]) -> int:
    import confluent_kafka  # before "ready": a missing client fails at once, not mid-run

    connection, settings = dict(spec["connection"]), dict(spec["settings"])
    emit = Emitter()
    emit({"ready": {"librdkafka": confluent_kafka.libversion()[0]}})
    serve({"produce": lambda request: _produce(connection, settings, request)}, emit)
    return 0


# ---- the parent: the step ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaStep:
    """What the step gives ``bench/cluster.py``: figures keyed as in ``cluster.json``, each
    round's JSON (``meta.runs``), the cores of the best round of each size (``meta.cpu_cores``),
    what failed, and what the brokers' logs said about the listener meanwhile."""

    figures: dict[str, float]
    runs: dict[str, Any]
    cores: dict[str, dict[str, float]]
    failures: tuple[str, ...]
    listener_log: dict[str, Any]
    librdkafka: str  # its version, "?" when the child did not start


def _log_marks(log_paths: Sequence[Path]) -> dict[Path, int]:
    marks = {}
    for path in log_paths:
        try:
            marks[path] = path.stat().st_size
        except OSError:
            marks[path] = 0
    return marks


def _log_lines_since(marks: Mapping[Path, int]) -> list[str]:
    lines: list[str] = []
    for path, offset in marks.items():
        try:
            with open(path, "rb") as log:
                log.seek(offset)
                text = log.read(_LOG_BYTES_MAX).decode("utf-8", "replace")
        except OSError:
            continue
        lines.extend(text.splitlines())
    return lines


def measure_kafka_producer(
    cluster: Any,
    sizes: Sequence[tuple[str, int]],
    *,
    settings: Mapping[str, Any],
    rounds: int,
    seconds: float,
    records_max: int,
    broker_pids: dict[int, int],
    idle_broker_cores: float,
    python_rps: Mapping[str, float],
    topic_records: Callable[[str], int],
    work_dir: Path,
    console: Console,
) -> KafkaStep:
    """``rounds`` rounds of each size to its topic (``kafka_topic``, made by the caller and
    empty); ``topic_records`` reads what a topic holds through the brokers' gRPC API;
    ``python_rps`` has the Python Producer's records/s by size label, for the ratio."""
    figures: dict[str, float] = {}
    runs: dict[str, Any] = {}
    cores_by_size: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    marks = _log_marks([cluster.log_path(i) for i in broker_pids])
    spec = {"connection": cluster.kafka_client_config("admin"), "settings": dict(settings)}
    child = Child(_MODULE, 0, spec, work_dir / "kafka-producer.log")
    version = "?"
    try:
        child.spawn()
        version = str(child.expect("ready")["librdkafka"])
        for label, size in sizes:
            topic = kafka_topic(label)
            acked = 0
            good: list[tuple[KafkaRound, dict[str, float]]] = []
            rounds_json = []
            for r in range(rounds):
                assert child.proc is not None  # spawned above
                meter = CpuMeter(broker_pids, client_pid=child.proc.pid)
                answer = child.call(
                    "produce",
                    round_timeout_s(seconds),
                    topic=topic,
                    record_size=size,
                    seconds=seconds,
                    records_max=records_max,
                )
                cores = meter.cores()  # the child still runs: its CPU is readable
                result = KafkaRound.from_json(answer)
                held = topic_records(topic)
                problems = round_problems(result, acked, held)
                acked += result.warm_up_records + result.records
                rounds_json.append({**result.to_json(), "problems": problems, "cores": cores})
                console.print(
                    f"  [bold]kafka {label}[/bold] round {r + 1}/{rounds}: {result.line()}",
                    highlight=False,
                )
                console.print(
                    f"    cores: brokers {cores['brokers']:.2f} · client {cores['client']:.2f} · "
                    f"other {cores['other']:.2f}; the topic holds {held:,} records",
                    highlight=False,
                )
                if result.client_errors:
                    console.print(
                        f"    librdkafka errors: {_top(result.client_errors, 5)}", highlight=False
                    )
                for problem in problems:
                    console.print(f"    [red]{problem}[/red]", highlight=False)
                if problems:
                    failures.append(f"kafka producer {label} round {r + 1}: {problems[0]}")
                else:
                    good.append((result, cores))
            runs[f"kafka_produce_{label}"] = {"rounds": rounds_json}
            if len(good) < rounds:
                continue  # a size with a failed round reports no figure
            best, cores = max(good, key=lambda rc: rc[0].records_per_s)
            cores_by_size[f"kafka produce {label}"] = cores
            figures.update(kafka_figures(label, best, cores, idle_broker_cores, python_rps))
            ratio = figures.get(f"kafka_to_python_ratio_{label}")
            versus = f" = {ratio:.2f}× our Python Producer" if ratio is not None else ""
            console.print(
                f"  kafka {label}: {best.records_per_s:,.0f} records/s "
                f"({best.mb_per_s:,.1f} MB/s){versus}",
                highlight=False,
            )
    except BenchError as exc:  # the rest of the run still counts
        failures.append(f"kafka producer: {exc}")
        console.print(f"  [red]kafka producer failed:[/red] {exc}", highlight=False)
    finally:
        child.stop()
    listener_log = listener_log_summary(_log_lines_since(marks))
    return KafkaStep(figures, runs, cores_by_size, tuple(failures), listener_log, version)


def kafka_figures(
    label: str,
    best: KafkaRound,
    cores: dict[str, float],
    idle_broker_cores: float,
    python_rps: Mapping[str, float],
) -> dict[str, float]:
    """The figures of one size from its best round and that round's cores (pure)."""
    broker_us, client_us = cpu_us_per_record(
        cores, idle_broker_cores, best.client_cpu_s, best.records
    )
    figures = {
        f"kafka_produce_rps_{label}": round(best.records_per_s, 1),
        f"kafka_produce_mbps_{label}": round(best.mb_per_s, 2),
        f"kafka_broker_cpu_us_per_record_{label}": round(broker_us, 2),
        f"kafka_client_cpu_us_per_record_{label}": round(client_us, 2),
    }
    ratio = to_python_ratio(best.records_per_s, python_rps.get(label))
    if ratio is not None:
        figures[f"kafka_to_python_ratio_{label}"] = ratio
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the child of make bench's Kafka producer step")
    parser.add_argument("--child", required=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _child(json.loads(args.child))


if __name__ == "__main__":
    sys.exit(main())
