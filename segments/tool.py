"""Operator tools over the storage engine: ``raftlog storage dump``, ``verify`` and ``demo``.

An IO shell: it reads and writes log directories, starts a writer process and kills it. The
demo shows the recovery promise end to end: a process appending as fast as it can is killed with
SIGKILL mid-write; reopening truncates the torn tail, and every batch the writer finished is
there, readable, CRC-checked, in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .batch import BatchBuilder, Compression, iter_batches, iter_records
from .clock import SYSTEM_CLOCK
from .errors import StorageError
from .log import Log, LogConfig
from .recovery import verify_directory

__all__ = ["demo", "dump", "verify"]


def verify(directories: list[str], *, console: Console) -> int:
    """Check every batch of each partition directory without changing it (CRC, offsets
    contiguous within and between segments, epochs never going down); print one line per
    partition. Exit status 0 when all are whole (a torn tail counts as whole: opening the log
    cuts it), 1 when any is damaged, 2 when any cannot be read."""
    status = 0
    for directory in directories:
        if not os.path.isdir(directory):
            console.print(f"{directory}: [red]error[/red] not a directory")
            status = max(status, 2)
            continue
        verdict = verify_directory(directory)
        if verdict.ok:
            console.print(
                f"{directory}: [green]OK[/green] {verdict.segments} segment(s), "
                f"{verdict.batches} batches, log end offset {verdict.log_end_offset}"
                + ("" if verdict.reason == "ok" else f" — {verdict.reason}"),
                highlight=False,
            )
        elif verdict.first_bad_offset is None:
            console.print(f"{directory}: [red]error[/red] {verdict.reason}", highlight=False)
            status = max(status, 2)
        else:
            console.print(
                f"{directory}: [red]DAMAGED[/red] at offset {verdict.first_bad_offset}: "
                f"{verdict.reason}",
                highlight=False,
            )
            status = max(status, 1)
    return status


def dump(directory: str, *, records: bool, console: Console) -> int:
    """Print every batch of a partition directory (like kafka-dump-log); 1 if any is corrupt."""
    if not os.path.isdir(directory):
        console.print(f"[red]error:[/red] {directory} is not a directory")
        return 2
    names = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
    table = Table(title=f"{directory}: {len(names)} segment(s)")
    for column in ("segment", "position", "base", "last", "epoch", "records", "codec", "bytes"):
        table.add_column(column, justify="right")
    bad = 0
    for name in names:
        data = Path(directory, name).read_bytes()
        position = 0
        try:
            for position, header in iter_batches(data):
                table.add_row(
                    name,
                    str(position),
                    str(header.base_offset),
                    str(header.last_offset),
                    str(header.leader_epoch),
                    str(header.record_count),
                    header.compression.name.lower(),
                    str(header.size_bytes),
                )
                if records:
                    for record in iter_records(data[position : position + header.size_bytes]):
                        console.print(
                            f"  {record.offset}: key={record.key!r} value={record.value!r}"
                        )
        except StorageError as exc:
            bad += 1
            table.add_row(name, str(position), "[red]corrupt[/red]", "", "", "", "", str(exc))
    console.print(table)
    return 1 if bad else 0


def _writer(directory: str) -> int:
    """Child process of the demo: append batches forever, reporting each finished one."""
    log = Log(directory, LogConfig(segment_bytes=4 << 20), clock=SYSTEM_CLOCK)
    offset = log.log_end_offset
    out = sys.stdout
    while True:
        builder = BatchBuilder(Compression.ZSTD)
        now = SYSTEM_CLOCK.wall_ms()
        for i in range(100):
            builder.append(f"record-{offset + i}".encode(), key=b"demo", timestamp_ms=now)
        info = log.append(builder.build(), leader_epoch=0, now_ms=now)
        offset = info.last_offset + 1
        out.write(f"{info.last_offset}\n")
        out.flush()


def demo(console: Console, *, directory: str | None = None, run_s: float = 1.5) -> int:
    """Kill a writer mid-append, recover, verify. Returns 0 when every check passes."""
    base = directory or tempfile.mkdtemp(prefix="raftlog-demo-")
    path = os.path.join(base, "demo-0")
    console.rule("[bold]raftlog storage demo[/bold]")
    console.print(f"log directory: {path}")
    console.print(f"1. a writer process appends zstd batches of 100 records for {run_s} s …")
    child = subprocess.Popen(
        [sys.executable, "-m", "raftlog.segments.tool", "writer", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged = -1
    deadline = time.monotonic() + run_s
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged = int(line)
            if time.monotonic() >= deadline:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    console.print(
        f"2. killed it with SIGKILL (pid {child.pid}) after it reported offset "
        f"{acknowledged:,} appended"
    )
    started = time.perf_counter()
    log = Log(path, LogConfig(segment_bytes=4 << 20), clock=SYSTEM_CLOCK)
    took_ms = (time.perf_counter() - started) * 1000
    console.print(
        f"3. reopened in {took_ms:.1f} ms: {log.segment_count} segments, log end offset "
        f"{log.log_end_offset:,}, torn tail cut: {log.recovered_bytes_truncated} bytes"
    )
    offset = log.log_start_offset
    expected = offset  # records must come back dense and in order
    problems: list[str] = []
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20)
        view = memoryview(result.data)
        for position, header in iter_batches(view):
            for record in iter_records(view[position : position + header.size_bytes]):
                if record.offset != expected:
                    problems.append(f"offset {expected} missing; found {record.offset}")
                if record.value != f"record-{record.offset}".encode():
                    problems.append(f"offset {record.offset} holds {record.value!r}")
                expected = record.offset + 1
        offset = result.next_offset
    log.close()
    table = Table(title="checks")
    table.add_column("check")
    table.add_column("result")

    def check(name: str, ok: bool, detail: str) -> None:
        table.add_row(name, ("[green]ok[/green] " if ok else "[red]FAILED[/red] ") + detail)
        if not ok:
            problems.append(name)

    check(
        "every reported append survived",
        log.log_end_offset > acknowledged,
        f"log end {log.log_end_offset:,} > last reported {acknowledged:,}",
    )
    check(
        "records are dense and in order",
        expected == log.log_end_offset and not any("missing" in p for p in problems),
        f"{expected:,} records read",
    )
    check("every record holds its value", not any("holds" in p for p in problems), "values match")
    console.print(table)
    if directory is None:
        for root, dirs, files in os.walk(base, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(base)
    if problems:
        console.print(f"[red]demo failed:[/red] {problems[:5]}")
        return 1
    console.print("[green]storage demo passed[/green]")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "writer":
        sys.exit(_writer(sys.argv[2]))
    if len(sys.argv) >= 3 and sys.argv[1] == "verify":  # until `raftlog storage verify` is wired
        sys.exit(verify(sys.argv[2:], console=Console()))
    sys.exit(f"usage: {sys.argv[0]} writer DIR | verify DIR...")
