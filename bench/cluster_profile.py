"""Profiles for ``make bench`` (``bench/cluster.py --profile DIR``): ``py-spy record --gil`` on
every broker and on the client during one round, and their top functions by self and by total
time, printed and kept in the report.

``--gil`` samples the thread holding the GIL, which is where Python's CPU goes; a thread blocked
in a C call that released the GIL (msync, epoll) can still be counted when no other thread
wants the GIL, so read a profile next to the CPU figures from ``/proc``. The raw (collapsed)
files stay in DIR for flame graphs. ``top_functions`` is pure; the rest runs py-spy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "PROFILE_RATE_HZ",
    "ProfileSummary",
    "Profiler",
    "print_profiles",
    "profile_s",
    "top_functions",
]

PROFILE_RATE_HZ = 200


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


@dataclass(slots=True)
class Profiler:
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


def profile_s(seconds: float) -> float:
    """py-spy records from the first acknowledgement for most of the round."""
    return max(1.0, min(seconds - 2.0, 20.0))


def print_profiles(console: Console, directory: str, seconds: float) -> dict[str, Any]:
    """Print the top functions of every profile in ``directory`` recorded over ``seconds``;
    the same for the JSON report, by profile name."""
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
