"""``make bench``: a local 3-node cluster measured end to end, against the issue's targets.

    python -m bench.cluster [--seconds 8] [--repeat 2] [--profile DIR]
                            [--plaintext] [--out FILE] [--strict]

An IO shell, one process (plus the three brokers it starts, and py-spy with ``--profile``).
It is a benchmark, not a test: it prints one table with every figure next to its target and the
NATS JetStream reference from the issue, and writes ``bench-results/cluster.json``. A missed
target is reported, not fatal (``--strict`` exits 1 then); a run that could not measure (no
acknowledgement at all, the cluster would not start) exits 1.

The run, in order (each step bounded; the cluster is stopped by PID on every way out):

1. **raw disk** — 256 MiB of sequential ``os.write`` in 1 MiB chunks to a file in the cluster's
   directory, one ``fsync`` at the end: the physical reference for everything after it
   (``bench/machine.py``).
2. a cluster of 3 brokers (``LocalCluster``, on free loopback ports found by probing) in a
   temporary directory under ``--dir``; topics with 3 partitions, replication factor 3 and
   ``min.insync.replicas`` 2, one per experiment. As deployed: mutual TLS between the client
   and the brokers and among the brokers, the client the cluster's super user (every ACL check
   still runs). ``--plaintext`` measures the same cluster without TLS, for the cost of it
   (``make bench-plaintext``); the mode is in the table's title and ``security`` in the JSON,
   which goes to ``bench-results/cluster.json`` or ``cluster-plaintext.json`` by default.
3. **produce** acks=all at 100 B, 1 KiB and 16 KiB (``raftlog bench produce`` engine, default
   producer settings: linger 5 ms, 256 KiB batches, idempotence); each round sends for
   ``--seconds`` then flushes; best of ``--repeat`` rounds.
4. **latency** — 100 B records at 10,000 records/s for ``--seconds``, linger
   ``--latency-linger-ms`` (default 2: with linger 0 the sender thread wakes for every record
   and fights the application for the GIL — measured p99 71 ms at linger 0, 28 ms at 1, 16 ms
   at 2 — and a 2 ms linger is part of every latency reported): p50 / p99 / p99.9 of send →
   acknowledgement.
5. **consume** — the 1 KiB topic from the beginning with one consumer: MB/s of record bytes.
6. **Kafka producer** — librdkafka (confluent-kafka, in a child process) through the brokers'
   Kafka listeners at 100 B and 16 KiB, acks=all, idempotence, the Python rounds' linger and
   batch size, no compression; best of ``--repeat`` rounds of ``--seconds``, each checked
   against what the topic holds, and its ratio to the Python producer's figure above: what the
   brokers take when the client is not the limit (``bench/kafka_producer.py``; ``--no-kafka``
   skips it). A delivery error or a count that does not match fails that size (exit 1).
7. **failover** — a producer at 2,000 records/s, acks=all, spreading records over the partitions
   explicitly; after 3 s the leader of partition 0 is killed with SIGKILL. ``failover_s`` is the
   longest gap between consecutive acknowledgements of any partition that broker led (the
   produce outage as a client sees it); the time from the kill to the end of that gap, and the
   longest gap on the *other* partitions (which lose a follower), are reported too
   (``bench/cluster_failover.py``).

CPU: for each produce round the CPU seconds of each broker and of the client (this process, or
the Kafka producer's child) are read from ``/proc`` and reported as cores (CPU s / wall s),
together with the whole machine's busy cores — the machine is shared, and "other" is what
neither the brokers nor the client used (``bench/machine.py``).

``--profile DIR`` runs ``py-spy record --gil`` (raw collapsed stacks, by function) on every broker
and on this process during the first round of ``--profile-run`` (100 B by default) and prints the
top functions by self and by total time of each; the raw files stay in DIR for flame graphs
(``bench/cluster_profile.py``, which says how to read them).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

from raftlog.client.admin import Admin
from raftlog.client.consumer import Consumer
from raftlog.client.local_cluster import LocalCluster, LocalClusterError
from raftlog.client.perf import run_produce
from raftlog.client.perf_engines import run_consume
from raftlog.client.perf_results import RECORDS_MAX, ConsumeSpec, ProduceResult, ProduceSpec
from raftlog.client.stats import LatencySummary

from .cluster_failover import FAILOVER_BEFORE_S, FAILOVER_RPS, FailoverFigures, run_failover
from .cluster_profile import Profiler, print_profiles, profile_s
from .common import (
    BenchError,
    Bound,
    FigureReport,
    Target,
    figure_table,
    free_base_port,
    measure_and_report,
)
from .kafka_producer import KAFKA_SIZES, kafka_settings, kafka_topic, measure_kafka_producer
from .machine import RAW_DISK_BYTES, CpuMeter, cpu_ceiling_rps, cpu_us_per_record, raw_disk_mbps
from .scrape import SCRAPE_INTERVAL_S, Scraper

__all__ = ["REFERENCE", "TARGETS", "Report", "main", "render"]

MIB = 1 << 20
SIZES: tuple[tuple[str, int], ...] = (("100b", 100), ("1k", 1024), ("16k", 16 * 1024))
PARTITIONS = 3
LATENCY_RPS = 10_000
IDLE_S = 10.0  # the window: an idle cluster, its 21 bench partitions created
IDLE_SETTLE_S = 2.0  # after creating the topics: leaders elected, followers fetching
_RECORDS_PER_SECOND_MAX = 2_000_000  # sizes num_records for a timed round; the clock stops it
_CLUSTER_START_ATTEMPTS = 3
_FREE_BYTES_MARGIN = 2 << 30


# ---- targets, references and the report (pure) ---------------------------------------------------


TARGETS: tuple[Target, ...] = (
    Target("produce_rps_100b", 400_000, Bound.AT_LEAST),
    Target("produce_mbps_16k", 180, Bound.AT_LEAST),
    Target("p99_ms_at_10k", 5.0, Bound.AT_MOST),
    Target("failover_s", 1.0, Bound.BELOW),
    Target("idle_cores", 0.03, Bound.BELOW),
)

# From the issue: a 3-node NATS JetStream cluster, R3 file storage, one Python client with 1024
# acks in flight, on this kind of 2-core machine (the p99 was at 23,700 msgs/s, 64 in flight).
REFERENCE: dict[str, float] = {
    "produce_rps_100b": 32_700,
    "produce_rps_1k": 22_700,
    "produce_mbps_1k": 23,
    "produce_rps_16k": 5_500,
    "produce_mbps_16k": 91,
    "p99_ms_at_10k": 6.1,
}

_ROW_ORDER = (
    "raw_disk_mbps",
    "idle_cores",
    "produce_rps_100b",
    "produce_mbps_100b",
    "produce_p99_ms_100b",
    "broker_cpu_us_per_record_100b",
    "client_cpu_us_per_record_100b",
    "cpu_ceiling_rps_100b",
    "produce_rps_1k",
    "produce_mbps_1k",
    "produce_p99_ms_1k",
    "broker_cpu_us_per_record_1k",
    "client_cpu_us_per_record_1k",
    "cpu_ceiling_rps_1k",
    "produce_rps_16k",
    "produce_mbps_16k",
    "produce_p99_ms_16k",
    "broker_cpu_us_per_record_16k",
    "client_cpu_us_per_record_16k",
    "cpu_ceiling_rps_16k",
    *(
        f"kafka_{figure}_{label}"
        for label, _ in KAFKA_SIZES
        for figure in (
            "produce_rps",
            "produce_mbps",
            "to_python_ratio",
            "broker_cpu_us_per_record",
            "client_cpu_us_per_record",
        )
    ),
    "p50_ms_at_10k",
    "p99_ms_at_10k",
    "p999_ms_at_10k",
    "rps_at_10k",
    "consume_rps_1k",
    "consume_mbps_1k",
    "failover_s",
    "failover_recovered_s",
    "failover_other_gap_s",
)


@dataclass(frozen=True, slots=True)
class Report(FigureReport):
    """Every figure of one run, keyed as in ``cluster.json``, plus how it was measured."""

    targets: ClassVar[tuple[Target, ...]] = TARGETS

    @property
    def security(self) -> str:
        """``tls`` or ``plaintext`` (a report from before TLS existed was plaintext)."""
        return str(self.meta.get("security", "plaintext"))

    def to_json(self) -> dict[str, Any]:
        met = self.verdicts()
        return {
            "security": self.security,
            **self.figures,
            "targets": {
                t.key: {"bound": t.bound, "kind": t.kind.name.lower(), "ok": met[t.key]}
                for t in TARGETS
                if t.key in met
            },
            "all_targets_met": bool(met) and all(met.values()),
            "reference_nats_r3": REFERENCE,
            **(
                {"kafka_producer_settings": self.meta["kafka_producer"]["settings"]}
                if "kafka_producer" in self.meta
                else {}
            ),
            **({"failures": list(self.failures)} if self.failures else {}),
            "meta": self.meta,
        }


def _format(key: str, value: float) -> str:
    if "_ratio" in key:
        return f"{value:,.2f}×"
    if "_us_per_record" in key:
        return f"{value:,.1f} µs"
    if key.endswith("_cores"):
        return f"{value:.3f} cores"
    if "mbps" in key:
        return f"{value:,.1f} MB/s"
    if "rps" in key:
        return f"{value:,.0f} rec/s"
    if "_ms" in key:
        return f"{value:,.2f} ms"
    if key.endswith("_s"):
        return f"{value:,.3f} s"
    return f"{value:,g}"


def render(report: Report) -> Table:
    """The figures as one table: value, target, ok/MISS, the NATS reference. Pure: no IO."""
    meta = report.meta
    cpu = meta.get("cpu_cores", {})
    cpu_lines = [
        f"{label}: brokers {c['brokers']:.2f} · client {c['client']:.2f} · "
        f"machine busy {c['machine']:.2f} of {meta.get('cpu_count', '?')} cores"
        for label, c in cpu.items()
    ]
    mode = "mutual TLS" if report.security == "tls" else "plaintext"
    kafka = meta.get("kafka_producer")
    kafka_lines = []
    if kafka is not None:
        settings = kafka["settings"]
        kafka_lines.append(
            f"kafka_*: librdkafka {kafka.get('librdkafka', '?')} (confluent-kafka, own process) "
            f"via the Kafka listeners, acks=all, idempotence, linger.ms {settings['linger.ms']}, "
            f"batch.size {settings['batch.size'] // 1024} KiB, compression "
            f"{settings['compression.type']}; best of {kafka['rounds']} × {kafka['seconds']} s; "
            "ratio = its records/s ÷ our Python Producer's at that size"
        )
    return figure_table(
        f"raftlog cluster benchmark (3 brokers + client on one machine, {mode})",
        "\n".join(
            [
                f"acks=all, RF 3, min ISR 2, {meta.get('partitions', '?')} partitions; "
                f"produce: best of {meta.get('repeat', '?')} × {meta.get('seconds', '?')} s, "
                f"linger {meta.get('linger_ms', '?')} ms, "
                f"batch {meta.get('batch_bytes', 0) // 1024} KiB; "
                f"latency run: linger {meta.get('latency_linger_ms', '?')} ms · MB = 10^6 bytes",
                "reference: NATS JetStream R3 file storage, one Python client, same machine "
                "class (from the issue; its p99 was at 23,700 msgs/s)",
                *kafka_lines,
                *cpu_lines,
            ]
        ),
        report.figures,
        _ROW_ORDER,
        _format,
        targets=TARGETS,
        reference=("NATS R3", REFERENCE),
    )


# ---- the cluster and a produce round -------------------------------------------------------------


def _start_cluster(console: Console, root: str, *, plaintext: bool, metrics: bool) -> Any:
    last: Exception | None = None
    for attempt in range(_CLUSTER_START_ATTEMPTS):
        cluster = LocalCluster(os.path.join(root, f"cluster-{attempt}"))
        base = free_base_port()
        try:
            cluster.up(3, base, timeout_s=60.0, plaintext=plaintext, metrics=metrics)
            return cluster
        except LocalClusterError as exc:  # most likely a port taken since we probed it
            last = exc
            cluster.down()
            console.print(f"[yellow]cluster start failed on port {base} ({exc}); retrying[/yellow]")
    raise BenchError(f"the cluster did not start: {last}")


def _produce_round(
    cluster: Any, spec: ProduceSpec, meter_pids: dict[int, int], profiler: Profiler | None
) -> tuple[ProduceResult, dict[str, float]]:
    started: list[bool] = []

    def progress(sent: int, acked: int) -> None:
        if profiler is not None and not started and acked > 0:
            started.append(True)
            profiler.start()

    meter = CpuMeter(meter_pids)
    result = run_produce(cluster.bootstrap, spec, security=cluster.security, progress=progress)
    cores = meter.cores()
    if profiler is not None:
        profiler.wait()
    return result, cores


# ---- the shell -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description="Produce/consume throughput, latency and failover of a local 3-node cluster.",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each timed run")
    parser.add_argument("--repeat", type=int, default=2, help="produce rounds per size (best of)")
    parser.add_argument("--producers", type=int, default=1, help="producer processes per run")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument(
        "--latency-linger-ms", type=int, default=2, help="producer linger of the latency run"
    )
    parser.add_argument("--batch-bytes", type=int, default=256 << 10)
    parser.add_argument("--sizes", default="100b,1k,16k", help="some of 100b,1k,16k")
    parser.add_argument("--no-failover", action="store_true")
    parser.add_argument(
        "--no-kafka",
        action="store_true",
        help="skip the librdkafka producer (via the Kafka listener)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy brokers and client into DIR")
    parser.add_argument(
        "--profile-run",
        default="100b",
        choices=[*(label for label, _ in SIZES), "latency"],
        help="which run --profile records (its first round)",
    )
    parser.add_argument(
        "--topic-config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a config for every bench topic, e.g. flush.messages=1 (fsync before acknowledging)",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS (default: mutual TLS, as deployed): to measure what TLS costs",
    )
    parser.add_argument(
        "--no-metrics",
        action="store_true",
        help="brokers without /metrics and the request meter (default: on, scraped every 5 s): "
        "to measure what metrics cost",
    )
    parser.add_argument("--dir", default=".bench-tmp", help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    parser.add_argument(
        "--out",
        help="the JSON report (default bench-results/cluster.json, with --plaintext "
        "bench-results/cluster-plaintext.json)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    labels = dict(SIZES)
    args.size_list = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not args.size_list or any(s not in labels for s in args.size_list):
        parser.error(f"--sizes takes some of {', '.join(labels)}")
    if not 1 <= args.repeat <= 10 or not 1.0 <= args.seconds <= 120.0:
        parser.error("--repeat is 1..10 and --seconds 1..120")
    if any("=" not in c for c in args.topic_config):
        parser.error("--topic-config takes NAME=VALUE")
    args.topic_configs = dict(c.split("=", 1) for c in args.topic_config)
    if args.out is None:
        name = "cluster-plaintext.json" if args.plaintext else "cluster.json"
        args.out = os.path.join("bench-results", name)
    return args


def _measure_idle(
    pids: dict[int, int], figures: dict[str, Any], meta: dict[str, Any], console: Console
) -> None:
    """What the idle cluster costs: its topics created, nothing produced, over ``IDLE_S``
    (``idle_cores``; ``broker_idle_cores``, the older key, is the same figure)."""
    time.sleep(IDLE_SETTLE_S)
    idle = CpuMeter(pids)
    time.sleep(IDLE_S)
    idle_cores = idle.cores()
    figures["idle_cores"] = figures["broker_idle_cores"] = idle_cores["brokers"]
    meta["cpu_cores"]["idle"] = idle_cores
    console.print(
        f"  idle: brokers use {idle_cores['brokers']:.3f} cores over {IDLE_S:g} s; "
        f"the rest of the machine {idle_cores['other']:.2f}",
        highlight=False,
    )


def _topic_records(cluster: Any, topic: str) -> int:
    """What ``topic`` holds, by the brokers' gRPC ListOffsets (high watermark − log start)."""
    with Consumer(cluster.bootstrap, security=cluster.security) as consumer:
        consumer.assign_topic(topic)
        partitions = consumer.assignment()
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        return sum(ends[tp] - starts[tp] for tp in partitions)


def _measure_kafka(
    cluster: Any,
    admin: Admin,
    args: argparse.Namespace,
    pids: dict[int, int],
    figures: dict[str, Any],
    meta: dict[str, Any],
    console: Console,
) -> tuple[str, ...]:
    """librdkafka's producer at the sizes of ``KAFKA_SIZES`` this run measured, each to a topic
    of its own made now (``bench/kafka_producer.py``); its failures."""
    sizes = [(label, size) for label, size in KAFKA_SIZES if label in args.size_list]
    if args.no_kafka or not sizes:
        return ()
    settings = kafka_settings(args.linger_ms, args.batch_bytes)
    console.print(
        f"[bold]kafka producer[/bold]: librdkafka at {', '.join(label for label, _ in sizes)}, "
        f"acks=all, idempotence, linger {args.linger_ms} ms, batch {args.batch_bytes // 1024} "
        f"KiB, via the Kafka listeners {cluster.kafka_bootstrap} …"
    )
    for label, _ in sizes:
        admin.create_topic(
            kafka_topic(label), PARTITIONS, 3, min_insync_replicas=2, configs=args.topic_configs
        )
    step = measure_kafka_producer(
        cluster,
        sizes,
        settings=settings,
        rounds=args.repeat,
        seconds=args.seconds,
        records_max=_records_max(args.seconds),
        broker_pids=pids,
        idle_broker_cores=figures.get("idle_cores", 0.0),
        python_rps={label: figures[f"produce_rps_{label}"] for label, _ in sizes},
        topic_records=functools.partial(_topic_records, cluster),
        work_dir=Path(cluster.dir).parent,
        console=console,
    )
    figures.update(step.figures)
    meta["runs"].update(step.runs)
    meta["cpu_cores"].update(step.cores)
    meta["kafka_producer"] = {
        "settings": settings,
        "librdkafka": step.librdkafka,
        "rounds": args.repeat,
        "seconds": args.seconds,
        "listener_log": step.listener_log,
    }
    log = step.listener_log
    console.print(
        f"  the brokers' logs meanwhile: {log['warnings']} Kafka listener warnings, "
        f"{log['closed_connections']} connections it closed, {log['errors']} ERROR lines",
        highlight=False,
    )
    for sample in log["samples"]:
        console.print(f"    [dim]{sample}[/dim]", highlight=False)
    return step.failures


def _records_max(seconds: float) -> int:
    """``num_records`` of a timed round: more than it can send; the clock stops it."""
    return min(int(seconds * _RECORDS_PER_SECOND_MAX), RECORDS_MAX)


def _profiler(args: argparse.Namespace, pids: dict[int, int]) -> Profiler | None:
    if not args.profile:
        return None
    targets = {f"broker{i}": pid for i, pid in pids.items()}
    targets["client"] = os.getpid()
    return Profiler(args.profile, targets, profile_s(args.seconds))


def run(args: argparse.Namespace, console: Console) -> Report:
    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    if free < _FREE_BYTES_MARGIN + RAW_DISK_BYTES:
        raise BenchError(f"{args.dir} has {free / MIB:,.0f} MiB free; need ≥ 2.3 GiB")
    root = tempfile.mkdtemp(prefix="cluster-", dir=args.dir)
    figures: dict[str, float] = {}
    failures: tuple[str, ...] = ()
    meta: dict[str, Any] = {
        "seconds": args.seconds,
        "repeat": args.repeat,
        "producers": args.producers,
        "partitions": PARTITIONS,
        "linger_ms": args.linger_ms,
        "latency_linger_ms": args.latency_linger_ms,
        "batch_bytes": args.batch_bytes,
        "security": "plaintext" if args.plaintext else "tls",
        "metrics": not args.no_metrics,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_unix_s": int(time.time()),
        "runs": {},
        "cpu_cores": {},
    }
    cluster = None
    scraper: Scraper | None = None
    stack = contextlib.ExitStack()
    try:
        console.print("[bold]raw disk[/bold]: 256 MiB of 1 MiB writes + fsync …")
        figures["raw_disk_mbps"] = round(raw_disk_mbps(root), 1)
        console.print(f"  {figures['raw_disk_mbps']:,.0f} MB/s")
        mode = "plaintext" if args.plaintext else "mutual TLS"
        console.print(f"[bold]cluster[/bold]: starting 3 brokers ({mode}) …")
        cluster = _start_cluster(
            console, root, plaintext=args.plaintext, metrics=not args.no_metrics
        )
        pids = {i: n.pid for i, n in cluster.nodes.items()}
        console.print(f"  bootstrap {cluster.bootstrap} · pids {pids}")
        urls = [f"http://{n.metrics}/metrics" for n in cluster.nodes.values() if n.metrics]
        scraper = stack.enter_context(Scraper(urls)) if urls else None
        if scraper is not None:
            console.print(
                f"  metrics on: scraping {len(urls)} brokers every {SCRAPE_INTERVAL_S:g} s"
            )
        meta["broker_pids"] = pids
        meta["topic_configs"] = args.topic_configs
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            topics = [f"bench-{label}" for label, _ in SIZES] + ["bench-latency", "bench-failover"]
            for topic in topics:
                admin.create_topic(
                    topic, PARTITIONS, 3, min_insync_replicas=2, configs=args.topic_configs
                )
            _measure_idle(pids, figures, meta, console)
            labels = dict(SIZES)
            for label in args.size_list:
                size = labels[label]
                spec = ProduceSpec(
                    topic=f"bench-{label}",
                    num_records=_records_max(args.seconds),
                    record_size=size,
                    acks="all",
                    batch_bytes=args.batch_bytes,
                    linger_ms=args.linger_ms,
                    producers=args.producers,
                    duration_s_max=args.seconds,
                )
                best: ProduceResult | None = None
                best_cores: dict[str, float] = {}
                rounds = []
                for r in range(args.repeat):
                    profiler = None
                    if args.profile and label == args.profile_run and r == 0:
                        profiler = _profiler(args, pids)
                    result, cores = _produce_round(cluster, spec, pids, profiler)
                    rounds.append(round(result.records_per_s))
                    console.print(
                        f"  [bold]{label}[/bold] round {r + 1}/{args.repeat}: {result.line()}",
                        highlight=False,
                    )
                    each = ", ".join(f"{cores['broker' + str(i)]:.2f}" for i in pids)
                    console.print(
                        f"    cores: brokers {cores['brokers']:.2f} ({each}) · "
                        f"client {cores['client']:.2f} · other {cores['other']:.2f}",
                        highlight=False,
                    )
                    if result.failed:
                        console.print(f"    [red]errors[/red]: {result.errors}")
                    if best is None or result.records_per_s > best.records_per_s:
                        best, best_cores = result, cores
                assert best is not None
                if not best.records:
                    raise BenchError(f"no record of {label} was acknowledged: {best.errors}")
                figures[f"produce_rps_{label}"] = round(best.records_per_s, 1)
                figures[f"produce_mbps_{label}"] = round(best.mb_per_s, 2)
                figures[f"produce_p99_ms_{label}"] = round(best.latency.p99_ms, 3)
                idle_brokers = figures.get("idle_cores", 0.0)
                broker_us, client_us = cpu_us_per_record(
                    best_cores, idle_brokers, best.client_cpu_s, best.records
                )
                figures[f"broker_cpu_us_per_record_{label}"] = round(broker_us, 2)
                figures[f"client_cpu_us_per_record_{label}"] = round(client_us, 2)
                figures[f"cpu_ceiling_rps_{label}"] = round(
                    cpu_ceiling_rps(broker_us, client_us, idle_brokers, os.cpu_count() or 2)
                )
                meta["runs"][f"produce_{label}"] = {**best.to_json(), "rounds_rps": rounds}
                meta["cpu_cores"][f"produce {label}"] = best_cores
            if args.profile and args.profile_run != "latency":
                meta["profiles"] = print_profiles(console, args.profile, profile_s(args.seconds))

            console.print(
                f"[bold]latency[/bold]: 100 B at {LATENCY_RPS:,} records/s, "
                f"linger {args.latency_linger_ms} ms …"
            )
            spec = ProduceSpec(
                topic="bench-latency",
                num_records=int(LATENCY_RPS * args.seconds),
                record_size=100,
                throughput=LATENCY_RPS,
                acks="all",
                linger_ms=args.latency_linger_ms,
            )
            profiler = _profiler(args, pids) if args.profile_run == "latency" else None
            result, cores = _produce_round(cluster, spec, pids, profiler)
            console.print(f"  {result.line()}", highlight=False)
            if profiler is not None:
                meta["profiles"] = print_profiles(console, args.profile, profile_s(args.seconds))
            latency: LatencySummary = result.latency
            figures["p50_ms_at_10k"] = round(latency.p50_ms, 3)
            figures["p99_ms_at_10k"] = round(latency.p99_ms, 3)
            figures["p999_ms_at_10k"] = round(latency.p999_ms, 3)
            figures["rps_at_10k"] = round(result.records_per_s, 1)
            meta["runs"]["latency_10k"] = result.to_json()
            meta["cpu_cores"]["latency 10k"] = cores

            if "1k" in args.size_list:
                console.print("[bold]consume[/bold]: the 1 KiB topic from the beginning …")
                meter = CpuMeter(pids)
                consumed = run_consume(
                    cluster.bootstrap,
                    ConsumeSpec(topic="bench-1k", idle_timeout_s=10.0),
                    security=cluster.security,
                )
                cores = meter.cores()
                console.print(f"  {consumed.line()}", highlight=False)
                figures["consume_rps_1k"] = round(consumed.records_per_s, 1)
                figures["consume_mbps_1k"] = round(consumed.mb_per_s, 2)
                meta["runs"]["consume_1k"] = consumed.to_json()
                meta["cpu_cores"]["consume 1k"] = cores

            failures = _measure_kafka(cluster, admin, args, pids, figures, meta, console)

            if not args.no_failover:
                console.print(
                    f"[bold]failover[/bold]: {FAILOVER_RPS:,} records/s, SIGKILL the leader of "
                    f"partition 0 after {FAILOVER_BEFORE_S:.0f} s …"
                )
                outcome = run_failover(cluster, admin, "bench-failover", console)
                fo: FailoverFigures = outcome.pop("figures")
                figures["failover_s"] = round(fo.longest_gap_s, 3)
                figures["failover_recovered_s"] = round(fo.recovered_s, 3)
                figures["failover_other_gap_s"] = round(fo.other_gap_s, 3)
                console.print(
                    f"  longest ack gap {fo.longest_gap_s:.3f} s on the victim's partitions "
                    f"(kill → recovered {fo.recovered_s:.3f} s); other partitions "
                    f"{fo.other_gap_s:.3f} s; {outcome['acked']:,} of {outcome['sent']:,} acked",
                    highlight=False,
                )
                meta["runs"]["failover"] = outcome
    except BaseException:
        if cluster is not None:
            for node_id in cluster.nodes:
                console.print(f"[dim]broker {node_id} log tail:\n{cluster.tail(node_id, 8)}[/dim]")
        raise
    finally:
        stack.close()  # the scraper first: the brokers are about to go
        if scraper is not None:
            meta["metrics_scrapes"] = scraper.summary()
        if cluster is not None:
            cluster.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(OSError):  # only if empty: another run may be using it
                os.rmdir(args.dir)
    meta["elapsed_s"] = int(time.time()) - meta["started_unix_s"]
    return Report(figures, meta, failures)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    return measure_and_report(run, render, args, interrupted="interrupted; the cluster is stopped")


if __name__ == "__main__":
    sys.exit(main())
