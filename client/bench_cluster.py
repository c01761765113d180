"""``make bench``: a local 3-node cluster measured end to end, against the issue's targets.

    python -m raftlog.client.bench_cluster [--seconds 8] [--repeat 2] [--profile DIR]
                                           [--plaintext] [--out FILE] [--strict]

An IO shell, one process (plus the three brokers it starts, and py-spy with ``--profile``).
It is a benchmark, not a test: it prints one table with every figure next to its target and the
NATS JetStream reference from the issue, and writes ``bench-results/cluster.json``. A missed
target is reported, not fatal (``--strict`` exits 1 then); a run that could not measure (no
acknowledgement at all, the cluster would not start) exits 1.

The run, in order (each step bounded; the cluster is stopped by PID on every way out):

1. **raw disk** — 256 MiB of sequential ``os.write`` in 1 MiB chunks to a file in the cluster's
   directory, one ``fsync`` at the end: the physical reference for everything after it.
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
6. **failover** — a producer at 2,000 records/s, acks=all, spreading records over the partitions
   explicitly; after 3 s the leader of partition 0 is killed with SIGKILL. ``failover_s`` is the
   longest gap between consecutive acknowledgements of any partition that broker led (the
   produce outage as a client sees it); the time from the kill to the end of that gap, and the
   longest gap on the *other* partitions (which lose a follower), are reported too.

CPU: for each produce round the CPU seconds of each broker and of this process are read from
``/proc`` and reported as cores (CPU s / wall s), together with the whole machine's busy cores —
the machine is shared, and "other" is what neither the brokers nor the client used.

``--profile DIR`` runs ``py-spy record --gil`` (raw collapsed stacks, by function) on every broker
and on this process during the first round of ``--profile-run`` (100 B by default) and prints the
top functions by self and by total time of each; the raw files stay in DIR for flame graphs.
``--gil`` samples the thread holding the GIL, which is where Python's CPU goes; a thread blocked
in a C call that released the GIL (msync, epoll) can still be counted when no other thread
wants the GIL, so read a profile next to the CPU figures from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from .perf import (
    MB,
    ConsumeSpec,
    LatencySummary,
    ProduceResult,
    ProduceSpec,
    Throttle,
    run_consume,
    run_produce,
)

__all__ = [
    "REFERENCE",
    "TARGETS",
    "ProfileSummary",
    "Report",
    "Target",
    "cpu_ceiling_rps",
    "cpu_us_per_record",
    "failover_figures",
    "main",
    "render",
    "top_functions",
]

MIB = 1 << 20
RAW_DISK_BYTES = 256 * MIB
RAW_DISK_CHUNK_BYTES = MIB
SIZES: tuple[tuple[str, int], ...] = (("100b", 100), ("1k", 1024), ("16k", 16 * 1024))
PARTITIONS = 3
LATENCY_RPS = 10_000
FAILOVER_RPS = 2_000
FAILOVER_BEFORE_S = 3.0
FAILOVER_AFTER_S = 7.0
IDLE_S = 3.0
_RECORDS_PER_SECOND_MAX = 2_000_000  # sizes num_records for a timed round; the clock stops it
PROFILE_RATE_HZ = 200
_PORT_RANGE = (30_000, 60_000)
_CLUSTER_START_ATTEMPTS = 3
_FREE_BYTES_MARGIN = 2 << 30


class BenchError(RuntimeError):
    """The benchmark could not produce a trustworthy figure; the message says why."""


# ---- targets, references and the report (pure) ---------------------------------------------------


class Bound(enum.Enum):
    AT_LEAST = "≥"
    AT_MOST = "≤"
    BELOW = "<"


@dataclass(frozen=True, slots=True)
class Target:
    """A bound from the issue on one figure."""

    key: str
    bound: float
    kind: Bound

    def met(self, value: float) -> bool:
        match self.kind:
            case Bound.AT_LEAST:
                return value >= self.bound
            case Bound.AT_MOST:
                return value <= self.bound
            case Bound.BELOW:
                return value < self.bound

    def describe(self) -> str:
        return f"{self.kind.value} {self.bound:,g}"


TARGETS: tuple[Target, ...] = (
    Target("produce_rps_100b", 400_000, Bound.AT_LEAST),
    Target("produce_mbps_16k", 180, Bound.AT_LEAST),
    Target("p99_ms_at_10k", 5.0, Bound.AT_MOST),
    Target("failover_s", 1.0, Bound.BELOW),
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
    "broker_idle_cores",
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
class Report:
    """Every figure of one run, keyed as in ``cluster.json``, plus how it was measured."""

    figures: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def verdicts(self) -> dict[str, bool]:
        return {t.key: t.met(self.figures[t.key]) for t in TARGETS if t.key in self.figures}

    @property
    def security(self) -> str:
        """``tls`` or ``plaintext`` (a report from before TLS existed was plaintext)."""
        return str(self.meta.get("security", "plaintext"))

    def to_json(self) -> dict[str, Any]:
        verdicts = self.verdicts()
        return {
            "security": self.security,
            **self.figures,
            "targets": {
                t.key: {"bound": t.bound, "kind": t.kind.name.lower(), "ok": verdicts[t.key]}
                for t in TARGETS
                if t.key in verdicts
            },
            "all_targets_met": bool(verdicts) and all(verdicts.values()),
            "reference_nats_r3": REFERENCE,
            "meta": self.meta,
        }


def _format(key: str, value: float) -> str:
    if "_us_per_record" in key:
        return f"{value:,.1f} µs"
    if key.endswith("_cores"):
        return f"{value:.2f} cores"
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
    table = Table(
        title=f"raftlog cluster benchmark (3 brokers + client on one machine, {mode})",
        caption="\n".join(
            [
                f"acks=all, RF 3, min ISR 2, {meta.get('partitions', '?')} partitions; "
                f"produce: best of {meta.get('repeat', '?')} × {meta.get('seconds', '?')} s, "
                f"linger {meta.get('linger_ms', '?')} ms, "
                f"batch {meta.get('batch_bytes', 0) // 1024} KiB; "
                f"latency run: linger {meta.get('latency_linger_ms', '?')} ms · MB = 10^6 bytes",
                "reference: NATS JetStream R3 file storage, one Python client, same machine "
                "class (from the issue; its p99 was at 23,700 msgs/s)",
                *cpu_lines,
            ]
        ),
        caption_justify="left",
    )
    for column, justify in (
        ("figure", "left"),
        ("value", "right"),
        ("target", "right"),
        ("result", "left"),
        ("NATS R3", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    targets = {t.key: t for t in TARGETS}
    verdicts = report.verdicts()
    for key in [k for k in _ROW_ORDER if k in report.figures]:
        target = targets.get(key)
        result = ""
        if target is not None:
            result = "[green]ok[/green]" if verdicts[key] else "[red]MISS[/red]"
        reference = REFERENCE.get(key)
        table.add_row(
            key,
            _format(key, report.figures[key]),
            target.describe() if target else "",
            result,
            _format(key, reference) if reference is not None else "",
        )
    return table


# ---- failover figures (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailoverFigures:
    longest_gap_s: float  # over the victim's partitions, from the last ack before the kill on
    recovered_s: float  # kill → the end of that gap: produces succeed again
    other_gap_s: float  # longest gap after the kill on the partitions that kept their leader


def _longest_gap(times: Sequence[float], since: float) -> tuple[float, float]:
    """The longest interval (start, end) between consecutive ``times`` (ascending), counting
    from the last one at or before ``since``; (since, since) when there is none."""
    start = 0
    for i, t in enumerate(times):
        if t <= since:
            start = i
    pairs = list(itertools.pairwise(times[start:]))
    return max(pairs, key=lambda ab: ab[1] - ab[0], default=(since, since))


def failover_figures(
    acks: Iterable[tuple[float, int]], kill_at: float, victims: set[int], end_at: float
) -> FailoverFigures:
    """From (acknowledged at, partition) of every successful record. A partition without an
    acknowledgement after the kill counts as out until ``end_at``. Answers already on their way
    when the leader died may land just after the kill: the outage is the longest gap, and
    "recovered" is its end (not the first acknowledgement after the kill)."""
    by_partition: dict[int, list[float]] = {}
    for at, partition in acks:
        by_partition.setdefault(partition, []).append(at)
    longest = recovered = other = 0.0
    for partition, times in by_partition.items():
        times.sort()
        if times[-1] <= kill_at:
            times.append(end_at)  # never came back
        start, end = _longest_gap(times, kill_at)
        if partition in victims:
            longest = max(longest, end - start)
            recovered = max(recovered, end - kill_at)
        else:
            other = max(other, end - start)
    for _ in victims - set(by_partition):  # never acknowledged at all
        longest = max(longest, end_at - kill_at)
        recovered = max(recovered, end_at - kill_at)
    return FailoverFigures(longest, recovered, other)


# ---- profiles (pure) -----------------------------------------------------------------------------


def _frame_name(frame: str) -> str:
    """``send (client/producer.py:175)`` → ``producer.py:send``."""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{os.path.basename(path)}:{name}"


def _thread_name(frame: str) -> str:
    """``thread (27192): raftlog-producer`` → ``raftlog-producer``; numbered pool threads
    (``Thread-14 (_run)``) are folded into one name."""
    name = frame.split(": ", 1)[1] if ": " in frame else frame
    return re.sub(r"-\d+", "-N", name)


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """A py-spy profile reduced to its top functions; fractions are of all samples."""

    samples: int
    self_top: list[tuple[str, float]]  # the leaf frame: where the time is spent
    total_top: list[tuple[str, float]]  # anywhere on the stack, once per stack
    threads: list[tuple[str, float]]


def top_functions(lines: Iterable[str], count: int = 15) -> ProfileSummary:
    """From py-spy's raw (collapsed) output — ``frame;frame;... samples`` per line, the first
    frame naming the thread when recorded with ``--threads``."""
    self_samples: dict[str, int] = {}
    total_samples: dict[str, int] = {}
    thread_samples: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, n_text = line.rstrip("\n").rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        raw = stack.split(";")
        thread = "(all)"
        if raw[0].startswith("thread ("):
            thread = _thread_name(raw.pop(0))
        frames = [_frame_name(f) for f in raw if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        thread_samples[thread] = thread_samples.get(thread, 0) + n
        self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + n
        for name in set(frames):
            total_samples[name] = total_samples.get(name, 0) + n

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
        return [(name, samples / total) for name, samples in ranked]

    if not total:
        return ProfileSummary(0, [], [], [])
    return ProfileSummary(total, top(self_samples), top(total_samples), top(thread_samples))


# ---- the machine: CPU and disk -------------------------------------------------------------------


def _process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of the brokers, this process and the machine over one interval."""

    def __init__(self, broker_pids: dict[int, int]) -> None:
        self.broker_pids = broker_pids
        self._start = self._read()
        self._wall = time.monotonic()

    def _read(self) -> dict[str, float]:
        out = {f"broker{i}": _process_cpu_s(pid) for i, pid in self.broker_pids.items()}
        out["client"] = _process_cpu_s(os.getpid())
        out["machine"] = _machine_busy_s()
        return out

    def cores(self) -> dict[str, float]:
        """Average cores used since construction, per broker, all brokers, client, machine,
        and ``other`` (the machine minus both); ``wall_s`` is the interval."""
        now = self._read()
        wall = max(time.monotonic() - self._wall, 1e-9)
        out = {k: round((now[k] - self._start[k]) / wall, 3) for k in now}
        out["brokers"] = round(sum(v for k, v in out.items() if k.startswith("broker")), 3)
        out["other"] = round(max(0.0, out["machine"] - out["brokers"] - out["client"]), 3)
        out["wall_s"] = round(wall, 3)
        return out


def cpu_us_per_record(
    cores: dict[str, float], idle_broker_cores: float, client_cpu_s: float, records: int
) -> tuple[float, float]:
    """(broker, client) CPU microseconds per acknowledged record, whatever else the machine was
    doing. The brokers' figure is what they used above their idle cost (Raft ticks, heartbeats):
    the marginal cost of a record."""
    if records <= 0:
        return math.nan, math.nan
    broker_s = max(0.0, cores["brokers"] - idle_broker_cores) * cores["wall_s"]
    return broker_s / records * 1e6, client_cpu_s / records * 1e6


def cpu_ceiling_rps(
    broker_us: float, client_us: float, idle_broker_cores: float, cpu_count: int
) -> float:
    """Records/s the whole machine could do for brokers + client at these per-record costs,
    after the brokers' idle cost: what the code allows on a machine with nothing else running."""
    return max(0.0, cpu_count - idle_broker_cores) * 1e6 / (broker_us + client_us)


def raw_disk_mbps(directory: str, total_bytes: int = RAW_DISK_BYTES) -> float:
    """Sequential ``os.write`` of ``total_bytes`` in 1 MiB chunks, then one fsync: MB/s."""
    path = os.path.join(directory, "raw-disk.bin")
    block = os.urandom(RAW_DISK_CHUNK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        written = 0
        while written < total_bytes:
            written += os.write(fd, block)
        os.fsync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(path)
    return written / elapsed / MB


# ---- the cluster ---------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(nodes: int = 3, rng: random.Random | None = None) -> int:
    """A base port whose gRPC (base..) and Raft (base+100..) ports are all free now."""
    rng = rng or random.Random()
    low, high = _PORT_RANGE
    for _ in range(200):
        base = rng.randrange(low, high - 200)
        ports = [base + i for i in range(nodes)] + [base + 100 + i for i in range(nodes)]
        if all(_port_free(p) for p in ports):
            return base
    raise BenchError(f"no free block of ports in {low}-{high}")


def _start_cluster(console: Console, root: str, *, plaintext: bool) -> Any:
    from .local_cluster import LocalCluster, LocalClusterError

    last: Exception | None = None
    for attempt in range(_CLUSTER_START_ATTEMPTS):
        cluster = LocalCluster(os.path.join(root, f"cluster-{attempt}"))
        base = free_base_port()
        try:
            cluster.up(3, base, timeout_s=60.0, plaintext=plaintext)
            return cluster
        except LocalClusterError as exc:  # most likely a port taken since we probed it
            last = exc
            cluster.down()
            console.print(f"[yellow]cluster start failed on port {base} ({exc}); retrying[/yellow]")
    raise BenchError(f"the cluster did not start: {last}")


# ---- the experiments -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Profiler:
    """py-spy record on given pids for ``seconds``, started once (on the first progress call)."""

    directory: str
    targets: dict[str, int]
    seconds: float
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        if self.processes:
            return
        os.makedirs(self.directory, exist_ok=True)
        py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        for name, pid in self.targets.items():
            command = [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(self.seconds))),
                "--rate",
                str(PROFILE_RATE_HZ),
                "--function",
                "--nonblocking",
                "--gil",
                "--threads",
                "--format",
                "raw",
                "-o",
                os.path.join(self.directory, f"{name}.txt"),
            ]
            self.processes[name] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

    def wait(self) -> None:
        for process in self.processes.values():
            try:
                process.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _produce_round(
    cluster: Any, spec: ProduceSpec, meter_pids: dict[int, int], profiler: _Profiler | None
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


def _failover(cluster: Any, admin: Any, topic: str, console: Console) -> dict[str, Any]:
    """A paced acks=all producer; SIGKILL of partition 0's leader after FAILOVER_BEFORE_S."""
    from .producer import Producer

    acks: list[tuple[float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def on_done(partition: int, future: Any) -> None:
        at = time.perf_counter()
        error = future.exception(0)
        with lock:
            if error is None:
                acks.append((at, partition))
            else:
                failures.append(str(error))

    partitions = admin.describe_topic(topic).partitions
    count = len(partitions)
    value = b"F" * 100
    throttle = Throttle(FAILOVER_RPS)
    kill_at = -1.0
    kill_unix_s = 0.0
    victim = controller = -1
    victims: set[int] = set()
    with Producer(
        cluster.bootstrap, acks="all", linger_ms=0, security=cluster.security
    ) as producer:
        started = time.perf_counter()
        i = 0
        while True:
            now = time.perf_counter()
            elapsed = now - started
            if elapsed > FAILOVER_BEFORE_S + FAILOVER_AFTER_S:
                break
            if kill_at < 0 and elapsed >= FAILOVER_BEFORE_S:
                described = admin.describe_topic(topic).partitions
                victim = described[0].leader
                victims = {p.partition for p in described if p.leader == victim}
                controller = admin.describe_cluster().controller_id
                kill_at = time.perf_counter()
                kill_unix_s = time.time()  # to line up with the brokers' logs
                cluster.kill(victim)
                console.print(
                    f"  killed broker {victim} (SIGKILL), leader of partition(s) {sorted(victims)}",
                    highlight=False,
                )
            pause = throttle.delay_s(i, elapsed)
            if pause:
                time.sleep(pause)
            partition = i % count
            future = producer.send(topic, value, partition=partition)
            future.add_done_callback(functools.partial(on_done, partition))
            i += 1
        end_at = time.perf_counter()
        with contextlib.suppress(Exception):  # what is left is counted as not acknowledged
            producer.flush(30.0)
    with lock:
        figures = failover_figures(list(acks), kill_at, victims, end_at)
        failed = len(failures)
        sample_errors = sorted(set(failures))[:5]
    return {
        "figures": figures,
        "victim": victim,
        "kill_unix_s": round(kill_unix_s, 3),
        "victim_was_controller": victim == controller,
        "victim_partitions": sorted(victims),
        "sent": i,
        "acked": len(acks),
        "failed": failed,
        "errors": sample_errors,
    }


# ---- the shell -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m raftlog.client.bench_cluster",
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


def _profiler(args: argparse.Namespace, pids: dict[int, int]) -> _Profiler | None:
    if not args.profile:
        return None
    targets = {f"broker{i}": pid for i, pid in pids.items()}
    targets["client"] = os.getpid()
    return _Profiler(args.profile, targets, _profile_s(args.seconds))


def _profile_s(seconds: float) -> float:
    """py-spy records from the first acknowledgement for most of the round."""
    return max(1.0, min(seconds - 2.0, 20.0))


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def _write_json(path: str, report: Report) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report.to_json(), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _print_profiles(console: Console, directory: str, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(Path(directory).glob("*.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            summary = top_functions(f, 15)
        if not summary.samples:
            continue
        gil = summary.samples / (seconds * PROFILE_RATE_HZ)  # GIL-held share of wall time
        threads = ", ".join(f"{name} {100 * share:.0f}%" for name, share in summary.threads[:4])
        table = Table(
            title=f"{path.stem}: GIL held {100 * gil:.0f}% of the time ({threads})",
            caption=f"{summary.samples:,} py-spy samples with the GIL, by function",
        )
        table.add_column("self %", justify="right")
        table.add_column("function (self)")
        table.add_column("total %", justify="right")
        table.add_column("function (total)")
        for i in range(max(len(summary.self_top), len(summary.total_top))):
            s = summary.self_top[i] if i < len(summary.self_top) else ("", 0.0)
            t = summary.total_top[i] if i < len(summary.total_top) else ("", 0.0)
            table.add_row(f"{100 * s[1]:.1f}", s[0], f"{100 * t[1]:.1f}", t[0])
        console.print(table)
        out[path.stem] = {
            "samples": summary.samples,
            "gil_held": round(gil, 3),
            "threads": [[n, round(f, 4)] for n, f in summary.threads],
            "self": [[n, round(f, 4)] for n, f in summary.self_top],
            "total": [[n, round(f, 4)] for n, f in summary.total_top],
        }
    return out


def run(args: argparse.Namespace, console: Console) -> Report:
    from .admin import Admin

    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    if free < _FREE_BYTES_MARGIN + RAW_DISK_BYTES:
        raise BenchError(f"{args.dir} has {free / MIB:,.0f} MiB free; need ≥ 2.3 GiB")
    root = tempfile.mkdtemp(prefix="cluster-", dir=args.dir)
    figures: dict[str, float] = {}
    meta: dict[str, Any] = {
        "seconds": args.seconds,
        "repeat": args.repeat,
        "producers": args.producers,
        "partitions": PARTITIONS,
        "linger_ms": args.linger_ms,
        "latency_linger_ms": args.latency_linger_ms,
        "batch_bytes": args.batch_bytes,
        "security": "plaintext" if args.plaintext else "tls",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_unix_s": int(time.time()),
        "runs": {},
        "cpu_cores": {},
    }
    cluster = None
    try:
        console.print("[bold]raw disk[/bold]: 256 MiB of 1 MiB writes + fsync …")
        figures["raw_disk_mbps"] = round(raw_disk_mbps(root), 1)
        console.print(f"  {figures['raw_disk_mbps']:,.0f} MB/s")
        mode = "plaintext" if args.plaintext else "mutual TLS"
        console.print(f"[bold]cluster[/bold]: starting 3 brokers ({mode}) …")
        cluster = _start_cluster(console, root, plaintext=args.plaintext)
        pids = {i: n.pid for i, n in cluster.nodes.items()}
        console.print(f"  bootstrap {cluster.bootstrap} · pids {pids}")
        meta["broker_pids"] = pids
        meta["topic_configs"] = args.topic_configs
        time.sleep(1.0)  # let start-up settle, then what an idle cluster costs
        idle = CpuMeter(pids)
        time.sleep(IDLE_S)
        idle_cores = idle.cores()
        figures["broker_idle_cores"] = idle_cores["brokers"]
        meta["cpu_cores"]["idle"] = idle_cores
        console.print(
            f"  idle: brokers use {idle_cores['brokers']:.2f} cores; "
            f"the rest of the machine {idle_cores['other']:.2f}",
            highlight=False,
        )
        with Admin(cluster.bootstrap, security=cluster.security) as admin:
            topics = [f"bench-{label}" for label, _ in SIZES] + ["bench-latency", "bench-failover"]
            for topic in topics:
                admin.create_topic(
                    topic, PARTITIONS, 3, min_insync_replicas=2, configs=args.topic_configs
                )
            labels = dict(SIZES)
            for label in args.size_list:
                size = labels[label]
                spec = ProduceSpec(
                    topic=f"bench-{label}",
                    num_records=min(int(args.seconds * _RECORDS_PER_SECOND_MAX), 20_000_000),
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
                idle_brokers = figures.get("broker_idle_cores", 0.0)
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
                meta["profiles"] = _print_profiles(console, args.profile, _profile_s(args.seconds))

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
                meta["profiles"] = _print_profiles(console, args.profile, _profile_s(args.seconds))
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

            if not args.no_failover:
                console.print(
                    f"[bold]failover[/bold]: {FAILOVER_RPS:,} records/s, SIGKILL the leader of "
                    f"partition 0 after {FAILOVER_BEFORE_S:.0f} s …"
                )
                outcome = _failover(cluster, admin, "bench-failover", console)
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
        if cluster is not None:
            cluster.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(OSError):  # only if empty: another run may be using it
                os.rmdir(args.dir)
    meta["elapsed_s"] = int(time.time()) - meta["started_unix_s"]
    return Report(figures, meta)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    console = Console()
    try:
        report = run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the cluster is stopped[/yellow]")
        return 130
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    console.print(render(report))
    _write_json(args.out, report)
    missed = [key for key, ok in report.verdicts().items() if not ok]
    console.print(
        f"wrote {args.out}; "
        + (f"[red]missed targets: {', '.join(missed)}[/red]" if missed else "all targets met")
    )
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
