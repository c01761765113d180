"""Hazard 7 of raft/pysyncobj_guards.py: nothing is acknowledged before it is on disk.

Three quorums in this process, joined by pysyncobj's own TCP transport on 127.0.0.1. Each node's
journal gets an fdatasync *recorder* (the real fdatasync, then a note of the last log index the
call covered), and each node's transport ``send`` and the quorum's apply hook are wrapped to
check, at the instant they happen, the order Raft needs:

* a follower's successful ``next_node_idx`` answer ("I hold everything below n") is sent only
  after an fdatasync covering index n - 1 on that follower;
* the leader applies (= counts as committed, which counts its own copy) an index only after an
  fdatasync covering it on the leader.

Before the fsync-ing journal, pysyncobj's mmap journal was msynced every 50 ms, after the answers
had gone out: the first answer tripped the check.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import pytest

from raftlog.raft.journal import DurableJournal
from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import QuorumConfig, QuorumError

pytestmark = pytest.mark.integration
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class ListMachine:
    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        self.items.append(command)
        return bytes(cbor2.dumps(len(self.items)))

    def snapshot(self) -> bytes:
        return bytes(cbor2.dumps(self.items))

    def restore(self, data: bytes) -> None:
        self.items = list(cbor2.loads(data))


class Recorder:
    """Per node: the highest log index an fdatasync covered, and every order violation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.synced: dict[int, int] = {}
        self.fdatasyncs: dict[int, int] = {}
        self.acks: dict[int, int] = {}
        self.leader_applies: dict[int, int] = {}
        self.violations: list[str] = []

    def instrument(self, node_id: int, quorum: RaftQuorum) -> None:
        node: Any = quorum._node
        journal = node._SyncObj__raftLog
        transport = node._SyncObj__transport
        real_fdatasync = getattr(journal, "_fdatasync", None)
        real_send = transport.send
        real_apply = node._raftlog_hooks.apply
        self.synced[node_id] = 0
        self.fdatasyncs[node_id] = self.acks[node_id] = self.leader_applies[node_id] = 0

        def fdatasync(fd: int) -> None:
            assert real_fdatasync is not None
            covered = journal[-1][1]  # sync() writes the whole log, then calls this
            real_fdatasync(fd)
            with self.lock:
                self.synced[node_id] = covered
                self.fdatasyncs[node_id] += 1

        def send(peer: Any, message: Any) -> Any:
            if (
                isinstance(message, dict)
                and message.get("type") == "next_node_idx"
                and message.get("success")
            ):
                claimed = message["next_node_idx"] - 1
                with self.lock:
                    self.acks[node_id] += 1
                    if claimed > self.synced[node_id]:
                        self.violations.append(
                            f"node {node_id} acknowledged index {claimed}, "
                            f"fdatasync-ed only up to {self.synced[node_id]}"
                        )
            return real_send(peer, message)

        def apply_committed(index: int, command: bytes) -> bytes | None:
            if node._isLeader():
                with self.lock:
                    self.leader_applies[node_id] += 1
                    if index > self.synced[node_id]:
                        self.violations.append(
                            f"leader {node_id} committed index {index}, "
                            f"fdatasync-ed only up to {self.synced[node_id]}"
                        )
            return real_apply(index, command)

        if real_fdatasync is not None:
            journal._fdatasync = fdatasync
        transport.send = send
        node._raftlog_hooks = dataclasses.replace(node._raftlog_hooks, apply=apply_committed)


def test_acks_and_leader_commits_wait_for_fdatasync(tmp_path: Path) -> None:
    voters = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    quorums: dict[int, RaftQuorum] = {}
    recorder = Recorder()
    try:
        for node_id in voters:
            config = QuorumConfig(
                node_id=node_id,
                voters=voters,
                secret="durability-test",
                data_dir=str(tmp_path / f"n{node_id}"),
            )
            quorums[node_id] = RaftQuorum(config, ListMachine())
            recorder.instrument(node_id, quorums[node_id])
        leader_id = wait_until(
            "a leader",
            lambda: next((i for i, q in quorums.items() if q.is_leader()), None),
            10.0,
        )
        leader = quorums[leader_id]
        commands = 300
        done = threading.Semaphore(0)
        errors: list[QuorumError] = []

        def callback(result: bytes | None, error: QuorumError | None) -> None:
            if error is not None:
                errors.append(error)
            done.release()

        for burst in range(6):  # bursts, so several ticks each append many entries
            for i in range(commands // 6):
                leader.submit_async(f"c{burst}-{i}".encode(), 10.0, callback)
            time.sleep(0.02)
        for _ in range(commands):
            assert done.acquire(timeout=15.0), "a command never finished"
        assert not errors, errors
        last = leader.status().commit_index
        wait_until(
            "every node to apply the last command",
            lambda: all(q.status().last_applied >= last for q in quorums.values()),
            10.0,
        )
        with recorder.lock:
            violations = list(recorder.violations)
            acks = sum(n for i, n in recorder.acks.items() if i != leader_id)
            leader_applies = recorder.leader_applies[leader_id]
            leader_fdatasyncs = recorder.fdatasyncs[leader_id]
        assert violations == [], violations[:5]
        assert acks > 0 and leader_applies >= commands  # the checks did run
        # Group commit: far fewer fdatasyncs than commands on the leader.
        assert 0 < leader_fdatasyncs <= commands // 3, leader_fdatasyncs
        for quorum in quorums.values():
            assert isinstance(quorum._node._SyncObj__raftLog, DurableJournal)
            status = quorum.status()
            assert status.leader_applied_before_durable == 0, status
            assert status.journal_durable_index <= status.log_last_index
    finally:
        for quorum in quorums.values():
            quorum.close()
