"""The engines of the perf tool (``raftlog bench``): one producer, one consumer, or both at once
(end to end) in this process, measured. ``perf_workers`` runs several producers as processes
over ``run_produce_here``; ``perf`` is the command line.

**produce** sends ``num_records`` records of ``record_size`` random upper-case letters (as Kafka's
tool does: compressible like text, never all-equal) through one ``Producer``, at most
``throughput`` records/s (``-1``: as fast as it goes). A record's latency is the time from
``send`` returning to its batch's acknowledgement reaching the producer's sender thread —
Kafka's callback latency. Cost per record is one ``perf_counter`` and one ``array.append``:
records of one batch share one completion callback (``_AckTracker``), so the tool does not slow
the producer it measures. Records/s counts acknowledged records over the time from the first
``send`` to the end of ``flush``; a one-record-per-partition warm-up before the clock starts
connects to every leader and gets the producer id.

**consume** reads a topic from the beginning with one ``Consumer`` until ``num_records`` (or
everything there was when it started) came back: records/s and MB/s of key + value bytes.

**e2e** produces at a fixed rate while a consumer in the same process long-polls the topic from
its end; each value carries a run tag and ``time.monotonic_ns()`` at send, so a record's latency
is receive time minus send time (one clock: no skew).

Every wait on a flush has a timeout; a consume or e2e run ends when nothing arrived for
``idle_timeout_s``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .perf_results import (
    E2E_MAGIC,
    E2E_TAG,
    ConsumeResult,
    ConsumeSpec,
    E2EResult,
    E2ESpec,
    ProduceResult,
    ProduceSpec,
    Throttle,
    make_payloads,
)
from .stats import LatencySummary

if TYPE_CHECKING:
    from .security import ClientSecurity

__all__ = [
    "PROGRESS_INTERVAL_S",
    "ProgressFn",
    "run_consume",
    "run_e2e",
    "run_produce_here",
]

PROGRESS_INTERVAL_S = 0.25
_FLUSH_TIMEOUT_S = 120.0


# ---- acknowledgement tracking --------------------------------------------------------------------


class _AckTracker:
    """Send times of every record and completion times of their batches.

    Consecutive records that share a batch form a *group* with one completion callback, which
    only stamps the group's completion time; the latencies are expanded after the run. The
    producing thread calls ``track``; callbacks come from the producer's sender thread (list item
    assignment and int adds are atomic under the GIL; ``acked`` is a progress estimate only).
    """

    def __init__(self) -> None:
        self.sends = array("d")  # perf_counter() after each send returned
        self.group_starts = array("q")  # index into sends of each group's first record
        self.done_at: list[float] = []  # per group: perf_counter() at completion; 0.0 = not yet
        self.group_failed: list[str | None] = []  # per group: the error, if it failed
        self.acked = 0
        self._current: object = None

    def track(self, future: Any, sent_at: float) -> None:
        # records of one batch share its concurrent Future (SendFuture._batch_future): one
        # callback per batch; any other future gets one callback per record
        batch = getattr(future, "_batch_future", None)
        index = len(self.sends)
        self.sends.append(sent_at)
        if batch is not None and batch is self._current:
            return
        self._current = batch
        group = len(self.group_starts)
        self.group_starts.append(index)
        self.done_at.append(0.0)
        self.group_failed.append(None)
        target = batch if batch is not None else future
        target.add_done_callback(functools.partial(self._on_done, group))

    def _on_done(self, group: int, future: Any) -> None:
        now = time.perf_counter()
        error = future.exception() if isinstance(future, Future) else _exception_of(future)
        if error is not None:
            self.group_failed[group] = f"{type(error).__name__}: {error}"
        self.done_at[group] = now
        self.acked += self._size(group)

    def _size(self, group: int) -> int:
        starts = self.group_starts
        end = starts[group + 1] if group + 1 < len(starts) else len(self.sends)
        return end - starts[group]

    def results(self) -> tuple[int, int, dict[str, int], array[float]]:
        """(acknowledged, failed, errors, latency samples in ms) once every group is done."""
        latencies = array("d")
        acked = failed = 0
        errors: dict[str, int] = {}
        sends = self.sends
        starts = self.group_starts
        for group, done in enumerate(self.done_at):
            first = starts[group]
            last = starts[group + 1] if group + 1 < len(starts) else len(sends)
            error = self.group_failed[group]
            if error is not None or done == 0.0:
                error = error or "never completed"
                failed += last - first
                errors[error] = errors.get(error, 0) + last - first
                continue
            acked += last - first
            latencies.extend([(done - sent) * 1000.0 for sent in sends[first:last]])
        return acked, failed, errors, latencies


def _exception_of(future: Any) -> BaseException | None:
    method = getattr(future, "exception", None)
    return method(0) if callable(method) else None


# ---- the produce engine --------------------------------------------------------------------------


ProgressFn = Callable[[int, int], None]  # (records sent, records acknowledged)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _producer(bootstrap: str, spec: ProduceSpec, security: ClientSecurity) -> Any:
    from .producer import Producer

    return Producer(
        bootstrap,
        security=security,
        acks=spec.acks,
        linger_ms=spec.linger_ms,
        batch_bytes_max=spec.batch_bytes,
        buffer_bytes_max=max(64 << 20, 4 * spec.batch_bytes),
        compression=spec.compression,
    )


def _warm_up(producer: Any, topic: str, value: bytes) -> None:
    """One record to every partition: metadata, connections, the producer id, before the clock."""
    count = producer.metadata.partition_count(topic, wait_s=10.0)
    futures = [producer.send(topic, value, partition=p) for p in range(count)]
    producer.flush(_FLUSH_TIMEOUT_S)
    for future in futures:
        future.result(0)


def _produce_loop(
    producer: Any,
    spec: ProduceSpec,
    tracker: _AckTracker,
    start_gate: Callable[[], None] | None,
    progress: ProgressFn | None,
) -> tuple[float, float, dict[str, int], int]:
    """Send; returns (monotonic start, elapsed s, send errors, records failed at send)."""
    from raftlog.proto.errors import RaftlogError

    payloads = make_payloads(spec.record_size)
    mask = len(payloads) - 1
    throttle = Throttle(spec.throughput) if spec.throughput > 0 else None
    cap_s = spec.duration_s_max if spec.duration_s_max else math.inf
    send = producer.send
    topic = spec.topic
    track = tracker.track
    clock = time.perf_counter
    send_errors: dict[str, int] = {}
    refused = 0
    if start_gate is not None:
        start_gate()
    started_monotonic = time.monotonic()
    started = clock()
    next_progress = started + PROGRESS_INTERVAL_S
    for i in range(spec.num_records):
        now = clock()
        if throttle is not None:
            pause = throttle.delay_s(i, now - started)
            if pause:
                time.sleep(pause)
        if now - started > cap_s:
            break
        try:
            future = send(topic, payloads[i & mask])
        except RaftlogError as exc:
            refused += 1
            message = f"{type(exc).__name__}: {exc}"
            send_errors[message] = send_errors.get(message, 0) + 1
            continue
        track(future, clock())
        if progress is not None and now >= next_progress:
            next_progress = now + PROGRESS_INTERVAL_S
            progress(i + 1, tracker.acked)
    producer.flush(_FLUSH_TIMEOUT_S)
    elapsed = clock() - started
    if progress is not None:
        progress(len(tracker.sends), tracker.acked)
    return started_monotonic, elapsed, send_errors, refused


def run_produce_here(
    bootstrap: str,
    spec: ProduceSpec,
    *,
    security: ClientSecurity,
    progress: ProgressFn | None = None,
    start_gate: Callable[[], None] | None = None,
) -> tuple[ProduceResult, array[float]]:
    """One producer in this process: the result and the latency samples (ms)."""
    tracker = _AckTracker()
    payload = make_payloads(spec.record_size, 1, seed=1)[0]
    with contextlib.closing(_producer(bootstrap, spec, security)) as producer:
        _warm_up(producer, spec.topic, payload)
        cpu_before = _cpu_s()
        started_at, elapsed, send_errors, refused = _produce_loop(
            producer, spec, tracker, start_gate, progress
        )
        cpu_s = _cpu_s() - cpu_before
        stats = dict(producer.stats)
    acked, failed, errors, latencies = tracker.results()
    for message, count in send_errors.items():
        errors[message] = errors.get(message, 0) + count
    result = ProduceResult(
        spec=spec,
        records=acked,
        failed=failed + refused,
        elapsed_s=elapsed,
        latency=LatencySummary.of(latencies),
        errors=errors,
        client_cpu_s=cpu_s,
        started_at=started_at,
        batches=int(stats.get("batches", 0)),
        requests=int(stats.get("requests", 0)),
    )
    return result, latencies


# ---- consume and end-to-end ----------------------------------------------------------------------


def run_consume(
    bootstrap: str,
    spec: ConsumeSpec,
    *,
    security: ClientSecurity,
    progress: ProgressFn | None = None,
) -> ConsumeResult:
    """Read ``spec.topic`` from the beginning until ``num_records`` came back (or idle)."""
    from .consumer import Consumer

    with Consumer(
        bootstrap,
        security=security,
        auto_offset_reset="earliest",
        fetch_max_bytes=spec.fetch_max_bytes,
        partition_fetch_bytes_max=spec.partition_fetch_bytes_max,
    ) as consumer:
        consumer.assign_topic(spec.topic)
        partitions = consumer.assignment()
        wanted = spec.num_records
        if wanted is None:
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            wanted = sum(ends[tp] - starts[tp] for tp in partitions)
        count = nbytes = 0
        cpu_before = _cpu_s()
        started = time.perf_counter()
        last_data = started
        next_progress = started + PROGRESS_INTERVAL_S
        while count < wanted:
            records = consumer.poll(timeout_ms=500, max_records=1_000_000)
            now = time.perf_counter()
            if not records:
                if now - last_data > spec.idle_timeout_s:
                    break
                continue
            last_data = now
            count += len(records)
            nbytes += sum(len(r.value or b"") + len(r.key or b"") for r in records)
            if progress is not None and now >= next_progress:
                next_progress = now + PROGRESS_INTERVAL_S
                progress(count, count)
        elapsed = (last_data if count else time.perf_counter()) - started
        if progress is not None:
            progress(count, count)
        return ConsumeResult(
            records=count,
            bytes=nbytes,
            elapsed_s=elapsed,
            fetches=consumer.stats["fetches"],
            client_cpu_s=_cpu_s() - cpu_before,
        )


def run_e2e(
    bootstrap: str,
    spec: E2ESpec,
    *,
    security: ClientSecurity,
    progress: ProgressFn | None = None,
) -> E2EResult:
    """Produce at ``spec.throughput`` while consuming from the end; latency send → receive."""
    from .consumer import Consumer
    from .producer import Producer

    run_id = random.getrandbits(32)
    filler = make_payloads(spec.record_size - E2E_TAG.size, 1)[0]
    latencies = array("d")
    stop = threading.Event()
    with (
        Producer(
            bootstrap, acks=spec.acks, linger_ms=spec.linger_ms, security=security
        ) as producer,
        Consumer(
            bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=100, security=security
        ) as consumer,
    ):
        _warm_up(producer, spec.topic, filler)
        consumer.assign_topic(spec.topic)
        for tp, end in consumer.end_offsets(consumer.assignment()).items():
            consumer.seek(tp, end)  # pinned before the first record goes out

        def produce() -> None:
            throttle = Throttle(spec.throughput)
            started = time.perf_counter()
            for i in range(spec.num_records):
                if stop.is_set():
                    return
                pause = throttle.delay_s(i, time.perf_counter() - started)
                if pause:
                    time.sleep(pause)
                tag = E2E_TAG.pack(E2E_MAGIC, run_id, time.monotonic_ns())
                producer.send(spec.topic, tag + filler)

        sender = threading.Thread(target=produce, name="e2e-producer", daemon=True)
        started = time.perf_counter()
        sender.start()
        last_data = started
        try:
            while len(latencies) < spec.num_records:
                records = consumer.poll(timeout_ms=200, max_records=100_000)
                now_ns = time.monotonic_ns()
                now = time.perf_counter()
                if not records:
                    if now - last_data > spec.idle_timeout_s:
                        break
                    continue
                last_data = now
                for record in records:
                    value = record.value
                    if value is None or len(value) < E2E_TAG.size:
                        continue
                    magic, rid, sent_ns = E2E_TAG.unpack_from(value)
                    if magic == E2E_MAGIC and rid == run_id:
                        latencies.append((now_ns - sent_ns) / 1e6)
                if progress is not None:
                    progress(len(latencies), len(latencies))
        finally:
            stop.set()
            sender.join(timeout=30)
        elapsed = last_data - started
    return E2EResult(spec, len(latencies), elapsed, LatencySummary.of(latencies))
