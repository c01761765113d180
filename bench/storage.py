"""Storage benchmark: ``Log`` append and read throughput against raw ``os.write`` / ``os.pread``,
and the time to reopen a 1 GiB log after SIGKILL. Run by ``make bench-storage``
(``python -m bench.storage``).

An IO shell, one process (plus the writer child it kills); single-threaded. It is a benchmark,
not a test: it prints every figure next to its target and writes ``bench-results/storage.json``.
A missed target is reported, not fatal (``--strict`` makes it exit 1); a wrong result (bytes
missing after a read, a recovered log that lost acknowledged batches) always exits 1.

What is measured, and why the comparison is fair:

* **append** — for each batch size (1 KiB, 16 KiB, 1 MiB), ``--mb`` MiB of batches built before
  the clock starts (compression none, random payload, ~1 KiB records) go through
  ``Log.append(batch, leader_epoch=0)`` into a fresh log with the default ``LogConfig``. Its flush
  policy fsyncs on segment roll and close only, and ``segment.bytes`` is 1 GiB, so no timed loop
  rolls and nothing is fsynced. The raw loop ``os.write``s the same batch objects, in the same
  order and chunk sizes, to a fresh ``O_APPEND`` file in the same directory. Neither side fsyncs.
* **read** — ``Log.read(offset, --read-max-bytes)`` from offset 0 to the log end offset, against
  ``os.pread`` of the same chunk size over the raw file. Both read from the page cache: nothing
  is dropped from it, so this measures the broker's CPU cost, not the disk.
* Each figure is the best of ``--repeat`` rounds; within a round the raw and the log side run
  back to back (alternating which goes first) so a noisy 2-core VM slows both alike. One untimed
  warm-up write comes first: in a VM the first touch of fresh page-cache memory is much slower.
* **recovery** — a child process (``--child`` mode of this module) appends 16 KiB batches with
  the default ``LogConfig`` and reports its progress; once it has written ``--recovery-mb`` MiB
  (1 GiB) the parent kills it with SIGKILL and times ``Log(directory)``, then checks that the log
  end offset covers everything the child reported and that the last batch reads back intact.

MB/s means 10**6 bytes a second. All files live in a temporary directory under ``--dir`` (on the
same disk as the repository), deleted on the way out, also on failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

from raftlog.segments.batch import HEADER_BYTES, build_batch
from raftlog.segments.clock import SYSTEM_CLOCK
from raftlog.segments.log import Log, LogConfig

from .common import (
    BenchError,
    Bound,
    FigureReport,
    Target,
    figure_table,
    measure_and_report,
    require,
)

__all__ = ["TARGETS", "Report", "main", "render"]

MB = 1_000_000  # throughput unit: MB/s is 10**6 bytes a second
MIB = 1 << 20
SIZES: tuple[tuple[str, int], ...] = (("1k", 1 << 10), ("16k", 16 << 10), ("1m", 1 << 20))
RECOVERY_BATCH_BYTES = 16 << 10

_RECORD_BYTES = 1024  # records of about 1 KiB: a batch of n KiB holds n records
_RECORD_OVERHEAD_BYTES = 8  # about: Kafka's varint framing of a ~1 KiB record (make_batch fits)
_TIMESTAMP_MS = 1_700_000_000_000  # fixed, so batches are reproducible from their seed
_POOL_BYTES_MAX = 64 * MIB  # distinct batches per size; larger runs cycle through them
_REPORT_EVERY_BATCHES = 64  # the writer child reports its progress this often
_MB_BOUNDS = (16, 1024)  # --mb: at most one 1 GiB segment, so a timed loop never rolls
_RECOVERY_MB_BOUNDS = (16, 4096)
_REPEAT_BOUNDS = (1, 10)
_FREE_BYTES_MARGIN = 256 * MIB


# ---- targets and the report (pure) ------------------------------------------------------------


TARGETS: tuple[Target, ...] = (
    Target("append_ratio_16k", 0.8, Bound.AT_LEAST),
    Target("append_ratio_1m", 0.8, Bound.AT_LEAST),
    Target("recovery_s_1gib", 1.0, Bound.BELOW),
)


@dataclass(frozen=True, slots=True)
class Report(FigureReport):
    """Every figure of one run, keyed as in ``storage.json``, plus how it was measured."""

    targets: ClassVar[tuple[Target, ...]] = TARGETS

    def to_json(self) -> dict[str, Any]:
        met = self.verdicts()
        return {
            **self.figures,
            "targets": {
                t.key: {"bound": t.bound, "at_least": t.kind is Bound.AT_LEAST, "ok": met[t.key]}
                for t in TARGETS
                if t.key in met
            },
            "all_targets_met": all(met.values()),
            "meta": self.meta,
        }


def _format(key: str, value: float) -> str:
    if key.endswith("_mbps"):
        return f"{value:,.0f} MB/s"
    if "ratio" in key:
        return f"{value:.2f}"
    if key.startswith("recovery_s"):
        return f"{value:.3f} s"
    return f"{value:,.0f}"


def _row_keys(figures: dict[str, float]) -> list[str]:
    """Figures in reading order: per size append then read, then recovery."""
    keys: list[str] = []
    for label, _ in SIZES:
        for stem in (
            "append_mbps",
            "raw_write_mbps",
            "append_ratio",
            "read_mbps",
            "raw_read_mbps",
            "read_ratio",
        ):
            keys.append(f"{stem}_{label}")
    keys += sorted(k for k in figures if k.startswith("recovery_"))
    return [k for k in keys if k in figures]


def render(report: Report) -> Table:
    """The figures as a table: value, target, ok/MISS. Pure: no IO."""
    meta = report.meta
    return figure_table(
        "raftlog storage benchmark",
        f"best of {meta.get('repeat', '?')} rounds × {meta.get('mb_per_size', '?')} MiB "
        "per size · MB = 10^6 bytes\n"
        f"flush policy: {meta.get('flush_policy', '?')}\n"
        f"reads: {meta.get('page_cache', '?')}",
        report.figures,
        _row_keys(report.figures),
        _format,
        targets=TARGETS,
    )


# ---- batches ------------------------------------------------------------------------------------


def make_batch(size_bytes: int, seed: int) -> bytes:
    """One uncompressed batch of exactly ``size_bytes``, random payload, reproducible by seed."""
    body_bytes = size_bytes - HEADER_BYTES
    record_count = max(1, body_bytes // _RECORD_BYTES)
    value_bytes = body_bytes // record_count - _RECORD_OVERHEAD_BYTES
    rng = random.Random(size_bytes * 1_000_003 + seed)
    values = [rng.randbytes(value_bytes) for _ in range(record_count)]
    # records are framed with varints, so the framing's size is found, not computed: a byte more
    # (or less) for each value in turn until the batch is exact (a few rounds: a longer value may
    # take a longer varint)
    batch = build_batch(values, timestamp_ms=_TIMESTAMP_MS)
    for _ in range(6):
        missing = size_bytes - len(batch)
        if missing == 0:
            break
        step = 1 if missing > 0 else -1
        for i in range(abs(missing)):  # a byte more (or less) for each value in turn
            v = values[i % record_count]
            values[i % record_count] = v + rng.randbytes(1) if step > 0 else v[:-1]
        batch = build_batch(values, timestamp_ms=_TIMESTAMP_MS)
    require(len(batch) == size_bytes, f"built {len(batch)} bytes, wanted {size_bytes}")
    return batch


def records_per_batch(size_bytes: int) -> int:
    return max(1, (size_bytes - HEADER_BYTES) // _RECORD_BYTES)


def pool_count(size_bytes: int, total_bytes: int) -> int:
    return max(1, min(total_bytes, _POOL_BYTES_MAX) // size_bytes)


def build_batches(size_bytes: int, total_bytes: int) -> list[bytes]:
    """``total_bytes`` of batches: a bounded pool of distinct ones, cycled."""
    pool = [make_batch(size_bytes, i) for i in range(pool_count(size_bytes, total_bytes))]
    return [pool[i % len(pool)] for i in range(total_bytes // size_bytes)]


# ---- throughput ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    write_s: float
    read_s: float


def _raw_round(work_dir: str, batches: Sequence[bytes], read_max_bytes: int) -> Round:
    """``os.write`` every batch to a fresh O_APPEND file, then ``os.pread`` it back in chunks."""
    path = os.path.join(work_dir, "raw.bin")
    total = sum(len(b) for b in batches)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        write = os.write
        written = 0
        gc.collect()
        started = time.perf_counter()
        for batch in batches:
            written += write(fd, batch)
        write_s = time.perf_counter() - started
    finally:
        os.close(fd)
    try:
        require(written == total, f"raw write wrote {written} of {total} bytes")
        fd = os.open(path, os.O_RDONLY)
        try:
            pread = os.pread
            position = 0
            gc.collect()
            started = time.perf_counter()
            while position < total:
                chunk = pread(fd, read_max_bytes, position)
                if not chunk:
                    break
                position += len(chunk)
            read_s = time.perf_counter() - started
        finally:
            os.close(fd)
        require(position == total, f"raw read got {position} of {total} bytes")
    finally:
        os.unlink(path)
    return Round(write_s, read_s)


def _log_round(work_dir: str, batches: Sequence[bytes], read_max_bytes: int) -> Round:
    """``Log.append`` every batch to a fresh log, then ``Log.read`` it all back."""
    total = sum(len(b) for b in batches)
    log = Log(os.path.join(work_dir, "bench-0"), clock=SYSTEM_CLOCK)  # the default LogConfig
    try:
        append = log.append
        gc.collect()
        started = time.perf_counter()
        for batch in batches:
            append(batch, leader_epoch=0)
        write_s = time.perf_counter() - started
        require(log.size_bytes == total, f"log holds {log.size_bytes} of {total} bytes")
        require(log.segment_count == 1, "the log rolled inside a timed loop")
        read = log.read
        end = log.log_end_offset
        offset = 0
        read_bytes = 0
        reads_max = len(batches) + 1  # every read returns at least one batch
        gc.collect()
        started = time.perf_counter()
        for _ in range(reads_max):
            if offset >= end:
                break
            result = read(offset, read_max_bytes)
            read_bytes += len(result.data)
            offset = result.next_offset
        read_s = time.perf_counter() - started
        require(read_bytes == total, f"log read got {read_bytes} of {total} bytes")
    finally:
        log.delete()  # no close: that would fsync what the raw side never does
    return Round(write_s, read_s)


def _warm_up(work_dir: str, total_bytes: int) -> None:
    """Touch ``total_bytes`` of page cache once, untimed (a VM's fresh memory is slow at first)."""
    block = random.Random(0).randbytes(MIB)
    _raw_round(work_dir, [block] * (total_bytes // MIB), MIB)


def measure_size(
    console: Console,
    label: str,
    size_bytes: int,
    *,
    total_bytes: int,
    repeat: int,
    read_max_bytes: int,
    work_dir: str,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Best-of figures for one batch size, and every round's MB/s (to judge the noise)."""
    batches = build_batches(size_bytes, total_bytes)
    total = len(batches) * size_bytes
    raw: list[Round] = []
    logged: list[Round] = []
    for i in range(repeat):
        if i % 2 == 0:
            raw.append(_raw_round(work_dir, batches, read_max_bytes))
            logged.append(_log_round(work_dir, batches, read_max_bytes))
        else:
            logged.append(_log_round(work_dir, batches, read_max_bytes))
            raw.append(_raw_round(work_dir, batches, read_max_bytes))
        console.print(
            f"  {label} round {i + 1}/{repeat}: append {total / logged[-1].write_s / MB:,.0f} "
            f"vs raw {total / raw[-1].write_s / MB:,.0f} MB/s · read "
            f"{total / logged[-1].read_s / MB:,.0f} vs raw {total / raw[-1].read_s / MB:,.0f} MB/s",
            highlight=False,
        )

    rounds = {
        "append": [total / r.write_s / MB for r in logged],
        "raw_write": [total / r.write_s / MB for r in raw],
        "read": [total / r.read_s / MB for r in logged],
        "raw_read": [total / r.read_s / MB for r in raw],
    }
    append, raw_write = max(rounds["append"]), max(rounds["raw_write"])
    read, raw_read = max(rounds["read"]), max(rounds["raw_read"])
    figures = {
        f"append_mbps_{label}": append,
        f"raw_write_mbps_{label}": raw_write,
        f"append_ratio_{label}": append / raw_write,
        f"read_mbps_{label}": read,
        f"raw_read_mbps_{label}": raw_read,
        f"read_ratio_{label}": read / raw_read,
    }
    return figures, {k: [round(x, 1) for x in v] for k, v in rounds.items()}


# ---- recovery after SIGKILL ---------------------------------------------------------------------


def child_main(directory: str, total_bytes: int) -> int:
    """The writer child: append 16 KiB batches, printing ``bytes_written last_offset`` every
    ``_REPORT_EVERY_BATCHES`` batches, until killed. Bounded: gives up at twice the target."""
    pool = [
        make_batch(RECOVERY_BATCH_BYTES, i)
        for i in range(pool_count(RECOVERY_BATCH_BYTES, total_bytes))
    ]
    # Ctrl-C reaches the whole process group: leave it to the parent, which SIGKILLs us (and a
    # parent that died abruptly ends us through a broken pipe or the bound below)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = Log(directory, clock=SYSTEM_CLOCK)  # the default LogConfig, as a broker would
    out = sys.stdout
    written = 0
    batches_max = 2 * total_bytes // RECOVERY_BATCH_BYTES
    for i in range(batches_max):
        info = log.append(pool[i % len(pool)], leader_epoch=0)
        written += RECOVERY_BATCH_BYTES
        if (i + 1) % _REPORT_EVERY_BATCHES == 0:
            out.write(f"{written} {info.last_offset}\n")
            out.flush()
    return 3  # never killed: the parent is gone or stuck


def measure_recovery(
    console: Console, *, work_dir: str, total_bytes: int, timeout_s: float
) -> tuple[dict[str, float], dict[str, Any]]:
    directory = os.path.join(work_dir, "recovery-0")
    command = [
        sys.executable,
        "-m",
        "bench.storage",
        "--child",
        directory,
        "--recovery-mb",
        str(total_bytes // MIB),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout_s, child.kill)  # bounds the wait for the child's lines
    watchdog.start()
    reported_bytes = 0
    reported_last_offset = -1
    try:
        lines = child.stdout
        if lines is None:  # PIPE was asked for
            raise BenchError("the writer child has no stdout pipe")
        for line in lines:
            reported_bytes, reported_last_offset = (int(x) for x in line.split())
            if reported_bytes >= total_bytes:
                break
    finally:
        killed_at = time.perf_counter()
        child.kill()  # SIGKILL: no close, no flush, no atexit
        child.wait()
        kill_to_exit_s = time.perf_counter() - killed_at
        watchdog.cancel()
        if child.stdout is not None:
            child.stdout.close()
    require(
        reported_bytes >= total_bytes,
        f"writer child stopped at {reported_bytes} bytes (exit {child.returncode}); "
        f"timeout {timeout_s:.0f} s",
    )
    console.print(
        f"  SIGKILL after {reported_bytes / MIB:,.0f} MiB reported (last offset "
        f"{reported_last_offset:,}); dead {kill_to_exit_s:.2f} s later",
        highlight=False,
    )
    gc.collect()
    started = time.perf_counter()
    log = Log(directory, clock=SYSTEM_CLOCK)
    recovery_s = time.perf_counter() - started
    try:
        leo = log.log_end_offset
        per_batch = records_per_batch(RECOVERY_BATCH_BYTES)
        require(
            leo > reported_last_offset,
            f"log end offset {leo} lost acknowledged offset {reported_last_offset}",
        )
        require(leo % per_batch == 0, f"log end offset {leo} is inside a batch")
        require(
            log.size_bytes == leo // per_batch * RECOVERY_BATCH_BYTES,
            f"{log.size_bytes} bytes on disk for log end offset {leo}",
        )
        pool_size = pool_count(RECOVERY_BATCH_BYTES, total_bytes)
        for offset in (0, leo - 1):  # the first and the last batch, CRC-checked by the read
            got = log.read(offset, 1)
            index = offset // per_batch
            expected = make_batch(RECOVERY_BATCH_BYTES, index % pool_size)
            require(
                got.next_offset == (index + 1) * per_batch and got.data[16:] == expected[16:],
                f"the batch at offset {offset} does not read back as written",
            )
        figures = {
            f"recovery_s_{_size_label(total_bytes)}": recovery_s,
            "recovery_truncated_bytes": float(log.recovered_bytes_truncated),
        }
        meta = {
            "recovery_log_bytes": log.size_bytes,
            "recovery_segment_count": log.segment_count,
            "recovery_log_end_offset": leo,
            "recovery_reported_last_offset": reported_last_offset,
            "recovery_kill_to_exit_s": round(kill_to_exit_s, 3),
            "recovery_page_cache": "warm (a SIGKILL loses no page cache)",
        }
    finally:
        log.delete()
    return figures, meta


def _size_label(total_bytes: int) -> str:
    if total_bytes % (1 << 30) == 0:
        return f"{total_bytes >> 30}gib"
    return f"{total_bytes // MIB}mib"


# ---- the shell ----------------------------------------------------------------------------------


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}]")
        return value

    return parse


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage",
        description="Storage throughput vs raw os.write/os.pread, and 1 GiB recovery time.",
    )
    parser.add_argument("--mb", type=_bounded_int(*_MB_BOUNDS), default=256, help="MiB per size")
    parser.add_argument("--repeat", type=_bounded_int(*_REPEAT_BOUNDS), default=3)
    parser.add_argument(
        "--sizes", default=",".join(label for label, _ in SIZES), help="e.g. 16k,1m"
    )
    parser.add_argument(
        "--read-max-bytes",
        type=_bounded_int(1 << 10, 64 << 20),
        default=1 << 20,
        help="max_bytes of each Log.read and the raw pread chunk (Kafka's fetch default: 1 MiB)",
    )
    parser.add_argument("--recovery-mb", type=_bounded_int(*_RECOVERY_MB_BOUNDS), default=1024)
    parser.add_argument("--no-recovery", action="store_true", help="skip the SIGKILL recovery")
    parser.add_argument("--recovery-timeout-s", type=float, default=300.0)
    parser.add_argument("--dir", default=".bench-tmp", help="parent of the temporary directory")
    parser.add_argument("--out", default=os.path.join("bench-results", "storage.json"))
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    labels = dict(SIZES)
    args.size_list = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.size_list if s not in labels]
    if unknown or not args.size_list:
        parser.error(f"--sizes takes some of {', '.join(labels)}; got {args.sizes!r}")
    return args


def _round_figure(key: str, value: float) -> float | int:
    if key == "recovery_truncated_bytes":
        return int(value)
    return round(value, 4 if ("ratio" in key or key.startswith("recovery_s")) else 1)


def run(args: argparse.Namespace, console: Console) -> Report:
    total_bytes = args.mb * MIB
    needed_bytes = 2 * total_bytes + (0 if args.no_recovery else 2 * args.recovery_mb * MIB)
    os.makedirs(args.dir, exist_ok=True)
    free_bytes = shutil.disk_usage(args.dir).free
    require(
        free_bytes >= needed_bytes + _FREE_BYTES_MARGIN,
        f"{args.dir} has {free_bytes / MIB:,.0f} MiB free; the benchmark needs "
        f"{(needed_bytes + _FREE_BYTES_MARGIN) / MIB:,.0f} MiB",
    )
    work_dir = tempfile.mkdtemp(prefix="storage-", dir=args.dir)
    figures: dict[str, float] = {}
    config = LogConfig()
    meta: dict[str, Any] = {
        "mb_per_size": args.mb,
        "repeat": args.repeat,
        "read_max_bytes": args.read_max_bytes,
        "flush_policy": (
            "default LogConfig: fsync on segment roll and close only; segment.bytes = "
            f"{config.segment_bytes >> 20} MiB, so no timed loop rolls or fsyncs, on either side"
        ),
        "page_cache": "page cache on both sides, nothing dropped (CPU cost, not the disk)",
        "work_dir": os.path.abspath(work_dir),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "started_unix_s": int(time.time()),
    }
    try:
        console.print(f"work directory: {work_dir} · warm-up write of {args.mb} MiB …")
        _warm_up(work_dir, total_bytes)
        labels = dict(SIZES)
        for label in args.size_list:
            console.print(f"[bold]{label}[/bold] batches: building {args.mb} MiB …")
            size_figures, rounds = measure_size(
                console,
                label,
                labels[label],
                total_bytes=total_bytes,
                repeat=args.repeat,
                read_max_bytes=args.read_max_bytes,
                work_dir=work_dir,
            )
            figures.update(size_figures)
            meta.setdefault("rounds_mbps", {})[label] = rounds
        if not args.no_recovery:
            console.print(
                f"[bold]recovery[/bold]: a child writes {args.recovery_mb} MiB of 16 KiB "
                "batches, then SIGKILL …"
            )
            recovery, recovery_meta = measure_recovery(
                console,
                work_dir=work_dir,
                total_bytes=args.recovery_mb * MIB,
                timeout_s=args.recovery_timeout_s,
            )
            figures.update(recovery)
            meta.update(recovery_meta)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # only if empty: another run may be using it
            os.rmdir(args.dir)
    meta["elapsed_s"] = int(time.time()) - meta["started_unix_s"]
    return Report({k: _round_figure(k, v) for k, v in figures.items()}, meta)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child is not None:
        return child_main(args.child, args.recovery_mb * MIB)
    return measure_and_report(run, render, args, interrupted="interrupted; temporary files removed")


if __name__ == "__main__":
    sys.exit(main())
