"""``raftlog bench produce|consume|e2e``: load generators and their report, like Kafka's
``kafka-producer-perf-test`` / ``kafka-consumer-perf-test`` / ``EndToEndLatency``.

The tool in four modules: this one is its command line (the parser lives in
``raftlog.client.cli``) and ``run_produce``, the entry ``make bench`` (``bench/cluster.py``) also
drives; ``perf_results`` is the pure part (specs, results, their report, the throttle;
percentiles come from ``raftlog.client.stats``), ``perf_engines`` the produce, consume and
end-to-end engines, ``perf_workers`` several producers as worker processes.

Bounds: every run has ``num_records`` (≤ ``RECORDS_MAX``: latency samples take 16 bytes a record)
and optionally ``duration_s_max``; every wait on a worker or a flush has a timeout.
MB/s is 10**6 bytes a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .perf_engines import ProgressFn, run_consume, run_e2e, run_produce_here
from .perf_results import (
    MB,
    ConsumeResult,
    ConsumeSpec,
    E2EResult,
    E2ESpec,
    ProduceResult,
    ProduceSpec,
)
from .perf_workers import run_produce_workers

if TYPE_CHECKING:
    from .security import ClientSecurity

__all__ = ["run_command", "run_produce"]


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
    return run_produce_workers(bootstrap, spec, security, progress)


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
