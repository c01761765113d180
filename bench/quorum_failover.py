"""Failover time of the metadata quorum: kill -9 the Raft leader, time a new leader's commit.

    python -m bench.quorum_failover [--runs 10] [--voters 3 5] [--stable-s 1.0]
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

Run by ``make bench-quorum``. Every wait is bounded, and every child is killed by PID on the way
out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console

from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import QuorumConfig

from .common import (
    BenchError,
    Child,
    Counter,
    Emitter,
    agreed_leader,
    bench_shell,
    first_commit,
    free_port,
    leader_answer,
    merge_json,
    probe_leadership,
    serve,
)

__all__ = ["main"]

_MODULE = "bench.quorum_failover"
_LEADER_TIMEOUT_S = 10.0


# ---- child --------------------------------------------------------------------------------


def _child(spec: dict[str, Any]) -> int:
    """One voter over a ``Counter``: answers ``leader``; ``probe`` starts probing for leadership
    (the answer comes when it committed or gave up), ``stop_probe`` ends it."""
    config = QuorumConfig(
        node_id=int(spec["node_id"]),
        voters={int(k): v for k, v in spec["voters"].items()},
        secret=spec["secret"],
        data_dir=spec["data_dir"],
    )
    quorum = RaftQuorum(config, Counter())
    emit = Emitter()
    stop = threading.Event()
    probers: list[threading.Thread] = []

    def probe(request: dict[str, Any]) -> None:
        stop.clear()

        def run() -> None:
            emit({"probe": probe_leadership(quorum, b"probe", stop)})

        probers.append(threading.Thread(target=run, daemon=True))
        probers[-1].start()

    def stop_probe(request: dict[str, Any]) -> None:
        stop.set()

    emit({"ready": True})
    try:
        serve(
            {"leader": lambda _: leader_answer(quorum), "probe": probe, "stop_probe": stop_probe},
            emit,
        )
    finally:
        stop.set()
        for prober in probers:
            prober.join(2.0)
        quorum.close()
    return 0


# ---- parent -------------------------------------------------------------------------------


class _Sample(NamedTuple):
    total_ms: float  # kill -> first commit on a survivor
    election_ms: float  # kill -> that survivor's accepted submit (it leads)
    commit_ms: float  # accepted submit -> committed


def _measure(size: int, runs: int, stable_s: float, workdir: Path) -> list[_Sample]:
    voters = {str(i): f"127.0.0.1:{free_port()}" for i in range(1, size + 1)}
    children = [
        Child(
            _MODULE,
            i,
            {
                "node_id": i,
                "voters": voters,
                "secret": "bench-secret",
                "data_dir": str(workdir / f"n{size}-{i}"),
            },
            workdir / f"n{size}-{i}.log",
        )
        for i in range(1, size + 1)
    ]
    samples: list[_Sample] = []
    try:
        for child in children:
            child.spawn()
        for child in children:
            child.expect("ready")
        for run in range(runs):
            leader = agreed_leader(children, _LEADER_TIMEOUT_S)
            time.sleep(stable_s)
            survivors = [c for c in children if c is not leader]
            for child in survivors:
                child.send("probe")
            killed_at = time.monotonic()
            leader.kill()
            _, probes = first_commit(survivors)
            done = [(p["committed"], p["submitted"]) for p in probes.values() if p is not None]
            if not done:
                raise BenchError(f"run {run}: no survivor committed within the deadline")
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
            leader.expect("ready")
    finally:
        for child in children:
            child.kill()
    return samples


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
    with (
        bench_shell(Console(stderr=True), "interrupted; children killed"),
        tempfile.TemporaryDirectory(prefix="raftlog-failover-") as tmp,
    ):
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
    merge_json(args.out, results)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
