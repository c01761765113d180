"""What the machine gives and what a run costs it, for ``make bench`` (``bench/cluster.py``):
CPU seconds of processes and of the whole machine from ``/proc`` (the machine is shared, so a
figure says whose cores went where), per-record CPU costs and the ceiling they allow, and the
raw disk's sequential write speed as the physical reference. Linux only.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from raftlog.client.perf_results import MB

__all__ = ["RAW_DISK_BYTES", "CpuMeter", "cpu_ceiling_rps", "cpu_us_per_record", "raw_disk_mbps"]

MIB = 1 << 20
RAW_DISK_BYTES = 256 * MIB
RAW_DISK_CHUNK_BYTES = MIB


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
    """CPU seconds of the brokers, the client and the machine over one interval. The client is
    this process, or ``client_pid`` (a client in a child process, read while it still runs:
    a process that has exited reads 0)."""

    def __init__(self, broker_pids: dict[int, int], client_pid: int | None = None) -> None:
        self.broker_pids = broker_pids
        self.client_pid = os.getpid() if client_pid is None else client_pid
        self._start = self._read()
        self._wall = time.monotonic()

    def _read(self) -> dict[str, float]:
        out = {f"broker{i}": _process_cpu_s(pid) for i, pid in self.broker_pids.items()}
        out["client"] = _process_cpu_s(self.client_pid)
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
