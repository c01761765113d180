"""``raftlog bench produce|consume|e2e``: load generators and their report, like Kafka's
``kafka-producer-perf-test`` / ``kafka-consumer-perf-test`` / ``EndToEndLatency``.

An IO shell over the client library, plus a pure part (percentiles, the throttle, the results and
their one-line report) that the unit tests cover. ``bench/cluster.py`` (``make
bench``) drives these engines against a local cluster.

**produce** sends ``num_records`` records of ``record_size`` random upper-case letters (as Kafka's
tool does: compressible like text, never all-equal) through one ``Producer``, at most
``throughput`` records/s (``-1``: as fast as it goes). A record's latency is the time from
``send`` returning to its batch's acknowledgement reaching the producer's sender thread —
Kafka's callback latency. Cost per record is one ``perf_counter`` and one ``array.append``:
records of one batch share one completion callback (``_AckTracker``), so the tool does not slow
the producer it measures. Records/s counts acknowledged records over the time from the first
``send`` to the end of ``flush``; a one-record-per-partition warm-up before the clock starts
connects to every leader and gets the producer id. ``producers > 1`` runs that many worker
processes (this module with ``--worker``), each with its share of records and throughput, started
together after all are connected; their records add up over the span from the earliest start to
the latest end, and their latency samples are merged before the percentiles are taken.
Workers reach the cluster as the parent does: the ``ClientSecurity`` (CA, certificate and key, or
plaintext) travels base64-encoded in their JSON order on stdin, never on the command line, where
``ps`` would show a private key.

**consume** reads a topic from the beginning with one ``Consumer`` until ``num_records`` (or
everything there was when it started) came back: records/s and MB/s of key + value bytes.

**e2e** produces at a fixed rate while a consumer in the same process long-polls the topic from
its end; each value carries a run tag and ``time.monotonic_ns()`` at send, so a record's latency
is receive time minus send time (one clock: no skew).

Bounds: every run has ``num_records`` (≤ ``RECORDS_MAX``: latency samples take 16 bytes a record)
and optionally ``duration_s_max``; every wait on a worker or a flush has a timeout.
MB/s is 10**6 bytes a second.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .security import ClientSecurity

__all__ = [
    "RECORDS_MAX",
    "ConsumeResult",
    "ConsumeSpec",
    "E2ESpec",
    "LatencySummary",
    "ProduceResult",
    "ProduceSpec",
    "Throttle",
    "merge_produce",
    "percentile",
    "run_consume",
    "run_e2e",
    "run_produce",
    "split_spec",
]

MB = 1_000_000
RECORDS_MAX = 20_000_000  # bounds memory: ~50 bytes a record for send times and latencies
_PAYLOADS = 64  # distinct payloads, cycled
_PROGRESS_INTERVAL_S = 0.25
_WORKER_READY_TIMEOUT_S = 60.0
_FLUSH_TIMEOUT_S = 120.0
_E2E_TAG = struct.Struct(">4sIq")  # magic, run id, send time (monotonic ns)
_E2E_MAGIC = b"E2EL"


# ---- the pure part -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values``: the smallest value with at least
    ``q`` percent of the values at or below it (q in (0, 100]); NaN when there are none.

    Worked example: of [1, 2, 3, 4] the 50th is 2, the 75th 3, the 99th 4.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], not {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = math.ceil(q / 100 * n - 1e-9)  # the epsilon keeps 0.999 * 1000 at 999
    return float(sorted_values[max(rank, 1) - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one run's latency samples, in milliseconds."""

    count: int
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencySummary:
        ordered = sorted(samples_ms)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            avg_ms=math.fsum(ordered) / len(ordered),
            p50_ms=percentile(ordered, 50),
            p95_ms=percentile(ordered, 95),
            p99_ms=percentile(ordered, 99),
            p999_ms=percentile(ordered, 99.9),
            max_ms=ordered[-1],
        )

    def to_json(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in _items(self)}

    def describe(self) -> str:
        if not self.count:
            return "no latency samples"
        return (
            f"latency ms p50 {self.p50_ms:.2f} · p95 {self.p95_ms:.2f} · p99 {self.p99_ms:.2f} · "
            f"p99.9 {self.p999_ms:.2f} · max {self.max_ms:.2f} (avg {self.avg_ms:.2f})"
        )


def _items(obj: Any) -> list[tuple[str, Any]]:
    return list(asdict(obj).items())


@dataclass(slots=True)
class Throttle:
    """Kafka's ``ThroughputThrottler``, without a clock: how long to pause before the next send
    so that ``sent`` records take at least ``sent / target_rps`` seconds.

    Pausing only once ahead by ``min_sleep_s`` lets records go in short bursts (10 at a time at
    10,000 records/s with 1 ms) instead of one sleep per record, which a 2-core machine cannot
    time; the schedule is cumulative, so an oversleep is made up by the next burst.
    """

    target_rps: float  # <= 0: unlimited
    min_sleep_s: float = 0.001

    def delay_s(self, sent: int, elapsed_s: float) -> float:
        if self.target_rps <= 0:
            return 0.0
        ahead_s = sent / self.target_rps - elapsed_s
        return ahead_s if ahead_s >= self.min_sleep_s else 0.0


@dataclass(frozen=True, slots=True)
class ProduceSpec:
    """One produce run (``raftlog bench produce``'s flags)."""

    topic: str
    num_records: int
    record_size: int
    throughput: float = -1.0  # records/s for the whole run; <= 0: unlimited
    acks: str = "all"
    batch_bytes: int = 256 << 10
    linger_ms: int = 5
    compression: str | None = None
    producers: int = 1
    duration_s_max: float | None = None  # stop sending after this long, whatever num_records

    def __post_init__(self) -> None:
        if not 1 <= self.num_records <= RECORDS_MAX:
            raise ValueError(f"num_records must be in [1, {RECORDS_MAX:,}]")
        if self.record_size < 0:
            raise ValueError("record_size must be >= 0")
        if not 1 <= self.producers <= 64:
            raise ValueError("producers must be in [1, 64]")


def split_spec(spec: ProduceSpec) -> list[ProduceSpec]:
    """The share of each of ``spec.producers`` workers: records and throughput divided evenly
    (the first workers take the remainder), one producer each."""
    n = spec.producers
    base, extra = divmod(spec.num_records, n)
    rate = spec.throughput / n if spec.throughput > 0 else -1.0
    return [
        replace(spec, num_records=base + (1 if i < extra else 0), throughput=rate, producers=1)
        for i in range(n)
        if base + (1 if i < extra else 0) > 0
    ]


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """What one produce run (or several workers, merged) achieved."""

    spec: ProduceSpec
    records: int  # acknowledged
    failed: int
    elapsed_s: float  # first send .. end of flush
    latency: LatencySummary
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0  # user + system CPU of the producing process(es)
    started_at: float = 0.0  # time.monotonic() of the first send (system-wide on Linux)
    batches: int = 0  # acknowledged batches and Produce requests (the producer's stats),
    requests: int = 0  # warm-up included: how well records were amortised

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.records_per_s * self.spec.record_size / MB

    def line(self) -> str:
        """The final line, as kafka-producer-perf-test prints it."""
        failed = f", [red]{self.failed:,} failed[/red]" if self.failed else ""
        return (
            f"{self.records:,} records acknowledged in {self.elapsed_s:.2f} s{failed}: "
            f"{self.records_per_s:,.0f} records/s ({self.mb_per_s:,.2f} MB/s) · "
            + self.latency.describe()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 4),
            "records_per_s": round(self.records_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 3),
            "latency_ms": self.latency.to_json(),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "batches": self.batches,
            "requests": self.requests,
            "records_per_batch": round(self.records / self.batches, 1) if self.batches else None,
            "errors": self.errors,
            "spec": asdict(self.spec),
        }


def merge_produce(
    spec: ProduceSpec, parts: Sequence[tuple[ProduceResult, Sequence[float]]]
) -> ProduceResult:
    """Several workers' results and latency samples as one run: records add up over the span
    from the earliest first send to the latest end; percentiles come from all samples."""
    if not parts:
        return ProduceResult(spec, 0, 0, 0.0, LatencySummary.of(()))
    start = min(r.started_at for r, _ in parts)
    end = max(r.started_at + r.elapsed_s for r, _ in parts)
    errors: dict[str, int] = {}
    for r, _ in parts:
        for message, count in r.errors.items():
            errors[message] = errors.get(message, 0) + count
    samples: list[float] = []
    for _, s in parts:
        samples.extend(s)
    return ProduceResult(
        spec=spec,
        records=sum(r.records for r, _ in parts),
        failed=sum(r.failed for r, _ in parts),
        elapsed_s=end - start,
        latency=LatencySummary.of(samples),
        errors=errors,
        client_cpu_s=sum(r.client_cpu_s for r, _ in parts),
        started_at=start,
        batches=sum(r.batches for r, _ in parts),
        requests=sum(r.requests for r, _ in parts),
    )


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    records: int
    bytes: int  # key + value bytes
    elapsed_s: float
    fetches: int = 0
    client_cpu_s: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.elapsed_s / MB if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.records:,} records ({self.bytes / MB:,.1f} MB) consumed in "
            f"{self.elapsed_s:.2f} s: {self.records_per_s:,.0f} records/s "
            f"({self.mb_per_s:,.2f} MB/s), {self.fetches:,} fetches"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed_s, 4),
            "records_per_s": round(self.records_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 3),
            "fetches": self.fetches,
            "client_cpu_s": round(self.client_cpu_s, 3),
        }


@dataclass(frozen=True, slots=True)
class ConsumeSpec:
    topic: str
    num_records: int | None = None  # None: everything in the topic when the run starts
    idle_timeout_s: float = 10.0  # give up when nothing arrives this long
    fetch_max_bytes: int = 50 << 20
    partition_fetch_bytes_max: int = 4 << 20


@dataclass(frozen=True, slots=True)
class E2ESpec:
    topic: str
    num_records: int = 10_000
    throughput: float = 1000.0
    record_size: int = 100
    acks: str = "all"
    linger_ms: int = 0
    idle_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.record_size < _E2E_TAG.size:
            raise ValueError(f"e2e records carry a {_E2E_TAG.size}-byte tag: record_size >= that")
        if not 1 <= self.num_records <= RECORDS_MAX:
            raise ValueError(f"num_records must be in [1, {RECORDS_MAX:,}]")


@dataclass(frozen=True, slots=True)
class E2EResult:
    spec: E2ESpec
    records: int  # received
    elapsed_s: float
    latency: LatencySummary

    def line(self) -> str:
        rate = self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.records:,} records end to end at {rate:,.0f} "
            f"records/s · " + self.latency.describe()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "elapsed_s": round(self.elapsed_s, 4),
            "latency_ms": self.latency.to_json(),
            "spec": asdict(self.spec),
        }


def make_payloads(size: int, count: int = _PAYLOADS, seed: int = 0) -> list[bytes]:
    """``count`` distinct values of ``size`` random upper-case letters (Kafka's perf payload)."""
    rng = random.Random(seed)
    letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [bytes(rng.choices(letters, k=size)) for _ in range(count)]


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
    next_progress = started + _PROGRESS_INTERVAL_S
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
            next_progress = now + _PROGRESS_INTERVAL_S
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


def run_produce(
    bootstrap: str,
    spec: ProduceSpec,
    *,
    security: ClientSecurity,
    progress: ProgressFn | None = None,
) -> ProduceResult:
    """``spec.producers`` producers: in this process when one, else in worker processes."""
    if spec.producers == 1:
        return run_produce_here(bootstrap, spec, security=security, progress=progress)[0]
    return _run_workers(bootstrap, spec, security, progress)


def _security_to_json(security: ClientSecurity) -> dict[str, str] | None:
    """A worker's order carries the PEMs base64-encoded; ``None`` is plaintext."""
    if security.ca_pem is None:
        return None
    pems = {"ca": security.ca_pem, "cert": security.cert_pem, "key": security.key_pem}
    return {k: base64.b64encode(v).decode("ascii") for k, v in pems.items() if v is not None}


def _security_from_json(body: dict[str, str] | None) -> ClientSecurity:
    from .security import ClientSecurity

    if body is None:
        return ClientSecurity.plaintext()
    pems = {k: base64.b64decode(v, validate=True) for k, v in body.items()}
    return ClientSecurity(pems["ca"], pems.get("cert"), pems.get("key"))


# ---- worker processes ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    process: subprocess.Popen[str]
    samples_path: str
    sent: int = 0
    acked: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    reader: threading.Thread | None = None


def _read_worker(worker: _Worker) -> None:
    stdout = worker.process.stdout
    assert stdout is not None  # PIPE was asked for
    for line in stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "ready" in message:
            worker.ready.set()
        elif "progress" in message:
            worker.sent, worker.acked = message["progress"]
        elif "result" in message:
            worker.result = message["result"]
    worker.ready.set()  # the worker ended: nobody waits on it forever


def _run_workers(
    bootstrap: str, spec: ProduceSpec, security: ClientSecurity, progress: ProgressFn | None
) -> ProduceResult:
    shares = split_spec(spec)
    tls = _security_to_json(security)
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="raftlog-perf-") as scratch:
        try:
            for i, share in enumerate(shares):
                path = os.path.join(scratch, f"samples-{i}.bin")
                command = [sys.executable, "-m", "raftlog.client.perf", "--worker"]
                order = {
                    "bootstrap": bootstrap,
                    "security": tls,
                    "spec": asdict(share),
                    "out": path,
                }
                body = json.dumps(order)
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
                assert process.stdin is not None
                process.stdin.write(body + "\n")
                process.stdin.flush()
                worker = _Worker(process, path)
                worker.reader = threading.Thread(target=_read_worker, args=(worker,), daemon=True)
                worker.reader.start()
                workers.append(worker)
            deadline = time.monotonic() + _WORKER_READY_TIMEOUT_S
            for worker in workers:
                if not worker.ready.wait(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError("a producer worker did not connect within 60 s")
                if worker.process.poll() is not None:
                    raise RuntimeError(f"a producer worker exited ({worker.process.returncode})")
            for worker in workers:  # all connected: go together
                assert worker.process.stdin is not None
                worker.process.stdin.write("go\n")
                worker.process.stdin.flush()
            while any(w.process.poll() is None for w in workers):
                if progress is not None:
                    progress(sum(w.sent for w in workers), sum(w.acked for w in workers))
                time.sleep(_PROGRESS_INTERVAL_S)
            parts: list[tuple[ProduceResult, Sequence[float]]] = []
            for worker in workers:
                if worker.reader is not None:
                    worker.reader.join(timeout=10)
                if worker.result is None:
                    raise RuntimeError(
                        f"a producer worker ended without a result ({worker.process.returncode})"
                    )
                samples = array("d")
                with open(worker.samples_path, "rb") as f:
                    samples.frombytes(f.read())
                parts.append((_result_from_json(worker.result, spec), samples))
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
                for stream in (worker.process.stdin, worker.process.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
    return merge_produce(spec, parts)


def _result_from_json(body: dict[str, Any], spec: ProduceSpec) -> ProduceResult:
    return ProduceResult(
        spec=spec,
        records=int(body["records"]),
        failed=int(body["failed"]),
        elapsed_s=float(body["elapsed_s"]),
        latency=LatencySummary.of(()),  # recomputed from the merged samples
        errors={str(k): int(v) for k, v in body["errors"].items()},
        client_cpu_s=float(body["client_cpu_s"]),
        started_at=float(body["started_at"]),
        batches=int(body["batches"]),
        requests=int(body["requests"]),
    )


def _worker_main(stdin: IO[str], stdout: IO[str]) -> int:
    """``--worker``: a JSON line of {bootstrap, security, spec, out} on stdin; prints ready,
    waits for ``go``, produces, writes the samples to ``out`` and a result line."""
    order = json.loads(stdin.readline())
    spec = ProduceSpec(**order["spec"])
    security = _security_from_json(order["security"])
    lock = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with lock:
            stdout.write(json.dumps(message) + "\n")
            stdout.flush()

    def gate() -> None:
        emit({"ready": True})
        if stdin.readline().strip() != "go":
            raise SystemExit(3)  # the parent went away

    def progress(sent: int, acked: int) -> None:
        emit({"progress": [sent, acked]})

    result, samples = run_produce_here(
        order["bootstrap"], spec, security=security, progress=progress, start_gate=gate
    )
    with open(order["out"], "wb") as f:
        samples.tofile(f)
    body = result.to_json()
    body["started_at"] = result.started_at
    body["elapsed_s"] = result.elapsed_s
    emit({"result": body})
    return 0


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
        next_progress = started + _PROGRESS_INTERVAL_S
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
                next_progress = now + _PROGRESS_INTERVAL_S
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
    filler = make_payloads(spec.record_size - _E2E_TAG.size, 1)[0]
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
                tag = _E2E_TAG.pack(_E2E_MAGIC, run_id, time.monotonic_ns())
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
                    if value is None or len(value) < _E2E_TAG.size:
                        continue
                    magic, rid, sent_ns = _E2E_TAG.unpack_from(value)
                    if magic == _E2E_MAGIC and rid == run_id:
                        latencies.append((now_ns - sent_ns) / 1e6)
                if progress is not None:
                    progress(len(latencies), len(latencies))
        finally:
            stop.set()
            sender.join(timeout=30)
        elapsed = last_data - started
    return E2EResult(spec, len(latencies), elapsed, LatencySummary.of(latencies))


# ---- the command line (``raftlog bench``) --------------------------------------------------------


class _ProgressBar:
    """A rich progress bar fed by ``update(sent, acked)`` from any thread."""

    def __init__(self, console: Any, label: str, total: int, record_size: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
            transient=True,
        )
        self._task = self._progress.add_task(label, total=total, rate="")
        self._record_size = record_size
        self._started = time.perf_counter()

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, sent: int, acked: int) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = acked / elapsed
        text = f"{rate:,.0f} rec/s"
        if self._record_size:
            text += f" {rate * self._record_size / MB:,.1f} MB/s"
        if sent != acked:
            text += f" · {sent - acked:,} in flight"
        self._progress.update(self._task, completed=acked, rate=text)


def run_command(
    args: argparse.Namespace, bootstrap: str, security: ClientSecurity, console: Any
) -> int:
    """``raftlog bench produce|consume|e2e`` (the parser lives in ``raftlog.client.cli``)."""
    quiet = bool(args.json)
    result: ProduceResult | ConsumeResult | E2EResult
    match args.bench_command:
        case "produce":
            spec = ProduceSpec(
                topic=args.topic,
                num_records=args.num_records,
                record_size=args.record_size,
                throughput=args.throughput,
                acks=args.acks,
                batch_bytes=args.batch_bytes,
                linger_ms=args.linger_ms,
                compression=None if args.compression == "none" else args.compression,
                producers=args.producers,
                duration_s_max=args.duration,
            )
            label = f"produce {spec.record_size} B acks={spec.acks}"
            with _maybe_bar(console, quiet, label, spec.num_records, spec.record_size) as bar:
                result = run_produce(bootstrap, spec, security=security, progress=bar)
        case "consume":
            cspec = ConsumeSpec(
                topic=args.topic, num_records=args.num_records, idle_timeout_s=args.timeout
            )
            total = cspec.num_records or 0
            with _maybe_bar(console, quiet, "consume", total, 0) as bar:
                result = run_consume(bootstrap, cspec, security=security, progress=bar)
        case "e2e":
            espec = E2ESpec(
                topic=args.topic,
                num_records=args.num_records,
                throughput=args.throughput,
                record_size=args.record_size,
                acks=args.acks,
                linger_ms=args.linger_ms,
            )
            label = f"e2e at {espec.throughput:,.0f} rec/s"
            with _maybe_bar(console, quiet, label, espec.num_records, 0) as bar:
                result = run_e2e(bootstrap, espec, security=security, progress=bar)
        case other:
            raise ValueError(f"unknown bench command {other!r}")
    if quiet:
        console.print_json(json.dumps(result.to_json()))
    else:
        console.print(result.line(), highlight=False)
    failed = getattr(result, "failed", 0)
    return 0 if result.records and not failed else 1


@contextlib.contextmanager
def _maybe_bar(
    console: Any, quiet: bool, label: str, total: int, record_size: int
) -> Iterator[ProgressFn | None]:
    if quiet:
        yield None
        return
    with _ProgressBar(console, label, total, record_size) as bar:
        yield bar.update


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--worker"]:
        return _worker_main(sys.stdin, sys.stdout)
    print("use `raftlog bench produce|consume|e2e` (this module's --worker is internal)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
