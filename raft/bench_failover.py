"""Failover time of the metadata quorum: kill -9 the Raft leader, time a new leader's commit.

    python -m raftlog.raft.bench_failover [--runs 10] [--voters 3 5] [--stable-s 1.0]
                                          [--out bench-results/quorum.json]

For each cluster size it starts that many child processes (this module with ``--child``), each
running a :class:`~raftlog.raft.quorum.RaftQuorum` with the default (tuned) timers on
127.0.0.1. Each run waits for an agreed leader, lets the cluster sit idle for ``--stable-s``,
tells every follower to start probing (submit a command whenever it thinks it is the leader),
then SIGKILLs the leader. Failover time = first successful commit on a survivor (its
``time.monotonic()``, a system-wide clock on Linux) minus the instant before ``kill``. The
killed node is restarted from its data directory before the next run. Results (median and max
per size, and the samples) are merged into ``--out`` under ``failover_ms_median_<n>`` /
``failover_ms_max_<n>`` / ``failover_ms_samples_<n>``.

Each failover is also split in two at the start of the probe's first accepted submit (the first
after the survivor's published view says it leads): ``failover_election_ms_*`` (kill until then:
the randomised election timeout, pre-vote and vote; it varies by ±75 ms from run to run, so
medians of ten runs differ by tens of ms between identical builds) and ``failover_commit_ms_*``
(from then until that command committed: the next heartbeat, a follower's fdatasync-ed answer,
the commit rule; the part the journal can change, steady to a few ms). Compare builds on the
second part, or on many interleaved runs of the total.

Every wait is bounded, and every child is killed by PID on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import cbor2

from .quorum import RaftQuorum
from .quorum_types import NotLeaderError, QuorumConfig, QuorumError

_PROBE_DEADLINE_S = 10.0
_PROBE_PAUSE_S = 0.002
_REPLY_TIMEOUT_S = 20.0


# ---- child --------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: bytes) -> bytes:
        self.value += 1
        return bytes(cbor2.dumps(self.value))

    def snapshot(self) -> bytes:
        return bytes(cbor2.dumps(self.value))

    def restore(self, data: bytes) -> None:
        self.value = int(cbor2.loads(data))


def _emit(lock: threading.Lock, reply: dict[str, Any]) -> None:
    with lock:
        print(json.dumps(reply), flush=True)


def _probe(quorum: RaftQuorum, stop: threading.Event, lock: threading.Lock) -> None:
    """Submit until a commit succeeds here (this node became leader), or until stopped."""
    deadline = time.monotonic() + _PROBE_DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        submitted_at = time.monotonic()
        try:
            quorum.submit(b"probe", 0.5)
        except NotLeaderError:
            stop.wait(_PROBE_PAUSE_S)
            continue
        except QuorumError:
            continue
        # submitted_at: this node's view said "leader" (else NotLeaderError at once).
        _emit(lock, {"probe": time.monotonic(), "submitted": submitted_at})
        return
    _emit(lock, {"probe": None, "submitted": None})


def _child(spec: dict[str, Any]) -> int:
    config = QuorumConfig(
        node_id=int(spec["node_id"]),
        voters={int(k): v for k, v in spec["voters"].items()},
        secret=spec["secret"],
        data_dir=spec["data_dir"],
    )
    quorum = RaftQuorum(config, _Counter())
    lock = threading.Lock()
    stop = threading.Event()
    prober: threading.Thread | None = None
    _emit(lock, {"ready": True})
    try:
        for line in sys.stdin:
            op = json.loads(line)["op"]
            if op == "is_leader":
                _emit(lock, {"is_leader": quorum.is_leader(), "leader_id": quorum.leader_id()})
            elif op == "probe":
                stop.clear()
                prober = threading.Thread(target=_probe, args=(quorum, stop, lock), daemon=True)
                prober.start()
            elif op == "stop_probe":
                stop.set()
            elif op == "close":
                break
    finally:
        stop.set()
        if prober is not None:
            prober.join(2.0)
        quorum.close()
    return 0


# ---- parent -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Child:
    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        self.node_id = int(spec["node_id"])
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def spawn(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "raftlog.raft.bench_failover",
                    "--child",
                    json.dumps(self.spec),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def send(self, op: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout_s: float = _REPLY_TIMEOUT_S) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout_s)
        if line is None:
            raise RuntimeError(f"node {self.node_id} exited; see {self.log_path}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _agreed_leader(children: list[_Child], timeout_s: float = 10.0) -> _Child:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = []
        for child in children:
            child.send("is_leader")
            answers.append(child.reply())
        leaders = [c for c, a in zip(children, answers, strict=True) if a["is_leader"]]
        if len(leaders) == 1 and all(a["leader_id"] == leaders[0].node_id for a in answers):
            return leaders[0]
        time.sleep(0.05)
    raise RuntimeError(f"no agreed leader within {timeout_s:.0f} s")


class _Sample(NamedTuple):
    total_ms: float  # kill -> first commit on a survivor
    election_ms: float  # kill -> that survivor's accepted submit (it leads)
    commit_ms: float  # accepted submit -> committed


def _measure(size: int, runs: int, stable_s: float, workdir: Path) -> list[_Sample]:
    voters = {i: f"127.0.0.1:{_free_port()}" for i in range(1, size + 1)}
    children = [
        _Child(
            {
                "node_id": i,
                "voters": {str(k): v for k, v in voters.items()},
                "secret": "bench-secret",
                "data_dir": str(workdir / f"n{size}-{i}"),
            },
            workdir / f"n{size}-{i}.log",
        )
        for i in voters
    ]
    samples: list[_Sample] = []
    try:
        for child in children:
            child.spawn()
        for child in children:
            assert child.reply()["ready"]
        for run in range(runs):
            leader = _agreed_leader(children)
            time.sleep(stable_s)
            survivors = [c for c in children if c is not leader]
            for child in survivors:
                child.send("probe")
            killed_at = time.monotonic()
            leader.kill()
            replies = [survivor.reply() for survivor in _first_reply(survivors)]
            done = [(r["probe"], r["submitted"]) for r in replies if r["probe"] is not None]
            if not done:
                raise RuntimeError(f"run {run}: no survivor committed within the deadline")
            committed_at, submitted_at = min(done)
            sample = _Sample(
                total_ms=(committed_at - killed_at) * 1000.0,
                election_ms=(submitted_at - killed_at) * 1000.0,
                commit_ms=(committed_at - submitted_at) * 1000.0,
            )
            samples.append(sample)
            print(
                f"voters={size} run={run} failover_ms={sample.total_ms:.0f} "
                f"(election {sample.election_ms:.0f}, commit {sample.commit_ms:.0f})",
                file=sys.stderr,
            )
            leader.spawn()
            assert leader.reply()["ready"]
    finally:
        for child in children:
            child.kill()
    return samples


def _first_reply(survivors: list[_Child]) -> list[_Child]:
    """Wait for the first survivor's probe result, then stop the rest; all have replied after."""
    deadline = time.monotonic() + _PROBE_DEADLINE_S + 5.0
    first: _Child | None = None
    while first is None and time.monotonic() < deadline:
        for child in survivors:
            if not child.lines.empty():
                first = child
                break
        else:
            time.sleep(0.001)
    for child in survivors:
        if child is not first:
            child.send("stop_probe")
    return survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--voters", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--stable-s", type=float, default=1.0)
    parser.add_argument("--out", default="bench-results/quorum.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="raftlog-failover-") as tmp:
        for size in args.voters:
            samples = _measure(size, args.runs, args.stable_s, Path(tmp))
            totals = [s.total_ms for s in samples]
            results[f"failover_ms_median_{size}"] = round(statistics.median(totals), 1)
            results[f"failover_ms_max_{size}"] = round(max(totals), 1)
            results[f"failover_ms_samples_{size}"] = [round(t, 1) for t in totals]
            for part in ("election", "commit"):
                values = [getattr(s, f"{part}_ms") for s in samples]
                results[f"failover_{part}_ms_median_{size}"] = round(statistics.median(values), 1)
                results[f"failover_{part}_ms_max_{size}"] = round(max(values), 1)
    results["failover_stable_s"] = args.stable_s
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    merged.update(results)
    out.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
