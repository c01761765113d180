"""Commit rate of the metadata quorum alone: small commands through 3 voters, nothing else.

    python -m raftlog.raft.bench_commit [--voters 3] [--commands 20000] [--inflight-max 1000]
                                        [--command-bytes 64] [--rounds 3] [--sync-commands 200]

A faster, narrower figure than ``bench_scale``'s "commits through 3 voters" (which runs the
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
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .quorum import RaftQuorum
from .quorum_types import QuorumConfig, QuorumError

_REPLY_TIMEOUT_S = 120.0
_LEADER_TIMEOUT_S = 15.0


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: bytes) -> bytes:
        self.value += 1
        return b""

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data)


def _pipeline(quorum: RaftQuorum, count: int, inflight_max: int, size: int) -> dict[str, Any]:
    slots = threading.Semaphore(inflight_max)
    lock = threading.Lock()
    done = threading.Event()
    failures: list[str] = []
    finished = [0]
    payload = b"x" * size

    def callback(result: bytes | None, error: QuorumError | None) -> None:
        slots.release()
        with lock:
            finished[0] += 1
            if error is not None:
                failures.append(type(error).__name__)
            if finished[0] == count:
                done.set()

    syncs_before = getattr(quorum.status(), "journal_syncs", None)
    start = time.monotonic()
    deadline = start + _REPLY_TIMEOUT_S
    for _ in range(count):
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
        quorum.submit_async(payload, 30.0, callback)
    done.wait(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - start
    syncs_after = getattr(quorum.status(), "journal_syncs", None)
    syncs = None if syncs_before is None else syncs_after - syncs_before
    return {"elapsed_s": elapsed, "finished": finished[0], "failed": len(failures), "syncs": syncs}


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
    quorum = RaftQuorum(config, _Counter())
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            if op == "is_leader":
                reply: dict[str, Any] = {"is_leader": quorum.is_leader()}
            elif op == "pipeline":
                reply = _pipeline(
                    quorum, request["count"], request["inflight_max"], request["size"]
                )
            elif op == "serial":
                reply = _serial(quorum, request["count"], request["size"])
            else:
                break
            print(json.dumps(reply), flush=True)
    finally:
        quorum.close()
    return 0


class _Child:
    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "raftlog.raft.bench_commit", "--child", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def call(self, timeout_s: float = _REPLY_TIMEOUT_S, **request: Any) -> dict[str, Any]:
        if request:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        line = self.lines.get(timeout=timeout_s)
        if line is None:
            raise RuntimeError("a child exited; see its log")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5.0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leader(children: list[_Child]) -> _Child:
    deadline = time.monotonic() + _LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        for child in children:
            if child.call(op="is_leader")["is_leader"]:
                return child
        time.sleep(0.05)
    raise RuntimeError(f"no leader within {_LEADER_TIMEOUT_S} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    children: list[_Child] = []
    with tempfile.TemporaryDirectory(prefix="raftlog-commit-") as tmp:
        try:
            voters = {i: f"127.0.0.1:{_free_port()}" for i in range(1, args.voters + 1)}
            for node_id in voters:
                spec = {"node_id": node_id, "voters": voters, "data_dir": f"{tmp}/n{node_id}"}
                children.append(_Child(spec, Path(tmp) / f"n{node_id}.log"))
            for child in children:
                if not child.call(timeout_s=30.0).get("ready"):
                    raise RuntimeError("a child did not start")
            leader = _leader(children)
            rounds = []
            for _ in range(args.rounds):
                rounds.append(
                    leader.call(
                        op="pipeline",
                        count=args.commands,
                        inflight_max=args.inflight_max,
                        size=args.command_bytes,
                    )
                )
            serial = leader.call(op="serial", count=args.sync_commands, size=args.command_bytes)
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
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
