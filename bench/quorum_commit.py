"""Commit rate of the metadata quorum alone: small commands through 3 voters, nothing else.

    python -m bench.quorum_commit [--voters 3] [--commands 20000] [--inflight-max 1000]
                                  [--command-bytes 64] [--rounds 3] [--sync-commands 200]

A faster, narrower figure than ``quorum_scale``'s "commits through 3 voters" (which runs the
metadata state machine and log compactions too): ``--voters`` child processes (this module with
``--child``) each run a :class:`~raftlog.raft.quorum.RaftQuorum` with the default timers over a
counter machine on 127.0.0.1. The leader submits ``--commands`` commands with ``submit_async``,
at most ``--inflight-max`` unanswered; rate = commands / (last callback - first submit), per
round, ``--rounds`` rounds on the same cluster; then ``--sync-commands`` commands one at a time
with ``submit`` (the latency of one commit). Also reported: the leader's journal fdatasyncs per
committed command (group commit: well below 1 under load), when the quorum reports them.

A benchmark, not a test: it prints one JSON object. Every wait is bounded; every child is killed
by PID on the way out and the temporary directory removed, also on failure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import QuorumConfig

from .common import (
    Child,
    Counter,
    Emitter,
    agreed_leader,
    bench_shell,
    free_port,
    leader_answer,
    pipeline,
    serve,
)

__all__ = ["main", "run"]

_MODULE = "bench.quorum_commit"
_REPLY_TIMEOUT_S = 120.0
_LEADER_TIMEOUT_S = 15.0
_SUBMIT_TIMEOUT_S = 30.0


def _pipeline(quorum: RaftQuorum, count: int, inflight_max: int, size: int) -> dict[str, Any]:
    syncs_before = getattr(quorum.status(), "journal_syncs", None)
    outcome = pipeline(
        quorum,
        [b"x" * size] * count,
        inflight_max,
        timeout_s=_REPLY_TIMEOUT_S,
        submit_timeout_s=_SUBMIT_TIMEOUT_S,
    )
    syncs_after = getattr(quorum.status(), "journal_syncs", None)
    syncs = None if syncs_before is None else syncs_after - syncs_before
    return {
        "elapsed_s": outcome.elapsed_s,
        "finished": outcome.answered,
        "failed": outcome.failed,
        "syncs": syncs,
    }


def _serial(quorum: RaftQuorum, count: int, size: int) -> dict[str, Any]:
    latencies: list[float] = []
    payload = b"y" * size
    for _ in range(count):
        start = time.monotonic()
        quorum.submit(payload, 5.0)
        latencies.append((time.monotonic() - start) * 1000)
    return {"latency_ms_median": statistics.median(latencies), "latency_ms_max": max(latencies)}


def _child(spec: dict[str, Any]) -> int:
    config = QuorumConfig(
        node_id=int(spec["node_id"]),
        voters={int(k): v for k, v in spec["voters"].items()},
        secret="bench-commit-secret",
        data_dir=spec["data_dir"],
    )
    quorum = RaftQuorum(config, Counter())
    emit = Emitter()
    emit({"ready": True})
    try:
        serve(
            {
                "leader": lambda _: leader_answer(quorum),
                "pipeline": lambda r: _pipeline(quorum, r["count"], r["inflight_max"], r["size"]),
                "serial": lambda r: _serial(quorum, r["count"], r["size"]),
            },
            emit,
        )
    finally:
        quorum.close()
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="raftlog-commit-") as tmp:
        try:
            voters = {str(i): f"127.0.0.1:{free_port()}" for i in range(1, args.voters + 1)}
            for node_id in range(1, args.voters + 1):
                spec = {"node_id": node_id, "voters": voters, "data_dir": f"{tmp}/n{node_id}"}
                child = Child(_MODULE, node_id, spec, Path(tmp) / f"n{node_id}.log")
                child.spawn()
                children.append(child)
            for child in children:
                child.expect("ready")
            leader = agreed_leader(children, _LEADER_TIMEOUT_S)
            rounds = []
            for _ in range(args.rounds):
                rounds.append(
                    leader.call(
                        "pipeline",
                        _REPLY_TIMEOUT_S,
                        count=args.commands,
                        inflight_max=args.inflight_max,
                        size=args.command_bytes,
                    )
                )
            serial = leader.call(
                "serial", _REPLY_TIMEOUT_S, count=args.sync_commands, size=args.command_bytes
            )
        finally:
            for child in children:
                child.kill()
    rates = [r["finished"] / r["elapsed_s"] for r in rounds]
    syncs = [r["syncs"] for r in rounds if r["syncs"] is not None]
    return {
        "commit_per_s_median": round(statistics.median(rates)),
        "commit_per_s_rounds": [round(r) for r in rates],
        "failed": sum(r["failed"] for r in rounds),
        "leader_fdatasyncs_per_commit": (
            round(sum(syncs) / (args.commands * len(syncs)), 4) if syncs else None
        ),
        "serial_commit_ms_median": round(serial["latency_ms_median"], 2),
        "serial_commit_ms_max": round(serial["latency_ms_max"], 2),
        "voters": args.voters,
        "commands": args.commands,
        "inflight_max": args.inflight_max,
        "command_bytes": args.command_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--inflight-max", type=int, default=1000)
    parser.add_argument("--command-bytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sync-commands", type=int, default=200)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return _child(json.loads(args.child))
    if args.voters < 1 or args.commands < 1 or args.rounds < 1 or args.sync_commands < 1:
        parser.error("--voters, --commands, --rounds and --sync-commands must be >= 1")
    with bench_shell(Console(stderr=True), "interrupted; children killed"):
        result = run(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
