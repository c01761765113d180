"""The pure part of the perf tool (``raftlog bench``): what a run is asked to do (the specs), what
it achieved (the results, their JSON and their one-line report, as Kafka's perf tools print
it), how several producer workers add up, the pacing of a throttled sender, and the payloads.

No IO, no clock: the engines (``perf_engines``) measure, these values describe. MB/s is 10**6
bytes a second; latencies are summarised by ``raftlog.client.stats``.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .stats import LatencySummary

__all__ = [
    "E2E_MAGIC",
    "E2E_TAG",
    "MB",
    "RECORDS_MAX",
    "ConsumeResult",
    "ConsumeSpec",
    "E2EResult",
    "E2ESpec",
    "ProduceResult",
    "ProduceSpec",
    "Throttle",
    "make_payloads",
    "merge_produce",
    "split_spec",
]

MB = 1_000_000
RECORDS_MAX = 20_000_000  # bounds memory: ~50 bytes a record for send times and latencies
_PAYLOADS = 64  # distinct payloads, cycled
# an e2e record's value starts with this tag: magic, run id, send time (monotonic ns)
E2E_TAG = struct.Struct(">4sIq")
E2E_MAGIC = b"E2EL"


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
        if self.record_size < E2E_TAG.size:
            raise ValueError(f"e2e records carry a {E2E_TAG.size}-byte tag: record_size >= that")
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
