"""Hazard 16 (raft/pysyncobj_guards.py): the Raft port under hostile traffic, real sockets.

Each test starts a cluster of quorum_node.py child processes with the harness of test_quorum.py
(loaded from that file, not copied) and attacks one node's Raft port, from this process or from
a flooder child process (this file run as a script, see :func:`flood`). Every child is killed by
PID at the end whatever the outcome; every wait is bounded.

On the code before hazard 16's guards every test here fails: under the flood a commit timed out
within a second (3 of 3 runs), the bomb grew the node's peak RSS by 1.7 GiB (and held its Raft
thread for 15 s), the trickling connection was never closed, nothing capped the connections in
the handshake, and pysyncobj's gzip path was live.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from raftlog.raft.pysyncobj_guards import wire_frame
from raftlog.raft.quorum_types import (
    MAX_HANDSHAKE_FRAME_BYTES,
    MAX_INFLATED_BYTES,
    MAX_UNAUTHENTICATED_CONNECTIONS,
    QuorumConfig,
    QuorumStorageError,
)

pytestmark = pytest.mark.integration


def _load_quorum_harness() -> ModuleType:
    """test_quorum.py's Node/Cluster harness and its ``make_cluster`` fixture, loaded by path
    (pytest's importlib mode puts no test directory on sys.path)."""
    name = "raftlog_tests_quorum_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_quorum.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_harness = _load_quorum_harness()
make_cluster = _harness.make_cluster  # the fixture: clusters of children, killed by PID
SECRET: str = _harness.SECRET
wait_until = _harness.wait_until
_connect: Callable[[int], socket.socket] = _harness._connect
_closed_by_peer: Callable[..., bool] = _harness._closed_by_peer

FLOOD_CONNECTIONS = 20
FLOOD_FRAME_BYTES = 16 * 1024 * 1024  # = MAX_FRAME_BYTES: hazard 5's cap alone lets it in
FLOOD_S = 10.0
BOMB_INFLATED_BYTES = 1024 * 1024 * 1024  # the 1 GiB, from about 1 MB on the wire
PEAK_RSS_GROWTH_BYTES_MAX = 128 * 1024 * 1024  # guarded: MAX_INFLATED_BYTES + copies of 1 MB


# ---- the outsider flood (child process) -------------------------------------------------------


def flood(port: int, connections: int, seconds: float, frame_bytes: int) -> dict[str, Any]:
    """``connections`` threads each stream frames announcing ``frame_bytes`` of random junk to
    127.0.0.1:``port`` for ``seconds``, reconnecting whenever the node closes the connection.
    No secret: nothing here can pass the handshake. Returns what each thread saw."""
    deadline = time.monotonic() + seconds
    junk = os.urandom(64 * 1024)
    header = struct.pack("i", frame_bytes)
    stats = [{"connects": 0, "closed_by_node": 0, "bytes_sent": 0} for _ in range(connections)]

    def stream(mine: dict[str, int]) -> None:
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError:
                time.sleep(0.01)
                continue
            mine["connects"] += 1
            with sock:
                sock.settimeout(0.2)  # a node that stops reading only slows us down
                try:
                    while time.monotonic() < deadline:
                        sock.sendall(header)
                        sent = 0
                        while sent < frame_bytes and time.monotonic() < deadline:
                            try:
                                sent += sock.send(junk[: frame_bytes - sent])
                            except TimeoutError:
                                continue
                        mine["bytes_sent"] += sent + len(header)
                except OSError:  # reset, broken pipe: the node closed it
                    mine["closed_by_node"] += 1

    threads = [threading.Thread(target=stream, args=(s,), daemon=True) for s in stats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10.0)
    return {"threads": stats}


@contextmanager
def flooding(port: int) -> Iterator[subprocess.Popen[str]]:
    """The flooder child against ``port``; killed by PID on the way out."""
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--port",
            str(port),
            "--connections",
            str(FLOOD_CONNECTIONS),
            "--seconds",
            str(FLOOD_S),
            "--frame-bytes",
            str(FLOOD_FRAME_BYTES),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- helpers ----------------------------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _read_message(sock: socket.socket, secret: str) -> Any:
    """One frame from a Raft port, decrypted and unpickled (the node is trusted here)."""
    from pysyncobj.encryptor import getEncryptor

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the node closed the connection during the handshake"
            data += chunk
        return data

    (length,) = struct.unpack("i", exactly(4))
    return pickle.loads(zlib.decompress(getEncryptor(secret).decrypt(exactly(length))))


def insider_session(port: int, claimed_address: str) -> socket.socket:
    """A connection that went through pysyncobj's handshake with the real secret: random keys
    exchanged, then ``claimed_address`` sent as its own (a voter's, to complete it)."""
    sock = _connect(port)
    own_key = os.urandom(32)
    sock.sendall(wire_frame(pickle.dumps(own_key, protocol=2), SECRET))
    echoed_key, node_key = _read_message(sock, SECRET)  # the node prefixes our key
    assert echoed_key == own_key
    sock.sendall(wire_frame(pickle.dumps((node_key, claimed_address), protocol=2), SECRET))
    return sock


def drained_until_closed(sock: socket.socket, timeout_s: float) -> bool:
    """Read and drop what the node sends (a registered voter gets pings) until it closes
    ``sock``; False if it is still open after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        sock.settimeout(left_s)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def zlib_bomb(inflated_bytes: int) -> bytes:
    """A zlib stream of ``inflated_bytes`` zero bytes (about 1/1000 of that), built in 1 MiB
    steps so this process never holds what it inflates to."""
    deflater = zlib.compressobj(9)
    step = bytes(1024 * 1024)
    parts = [deflater.compress(step) for _ in range(inflated_bytes // len(step))]
    parts.append(deflater.flush())
    return b"".join(parts)


def closed_within(sock: socket.socket, timeout_s: float, trickle_every_s: float) -> float | None:
    """Send one byte every ``trickle_every_s`` until the node closes ``sock``; seconds until it
    did, or None if it was still open after ``timeout_s``."""
    start = time.monotonic()
    sock.setblocking(False)
    while time.monotonic() - start < timeout_s:
        readable, _, _ = select.select([sock], [], [], trickle_every_s)
        try:
            if readable and sock.recv(1) == b"":
                return time.monotonic() - start
            sock.send(b"x")
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return time.monotonic() - start
    return None


# ---- in-process ---------------------------------------------------------------------------------


def test_pysyncobj_gzip_dump_format_is_disabled() -> None:
    from pysyncobj.serializer import Serializer

    in_memory = Serializer(None, 1024, False, None, None, None)  # pysyncobj's gzip+pickle path
    with pytest.raises(QuorumStorageError, match="gzip"):
        in_memory.serialize(("state",), 1)
    with pytest.raises(QuorumStorageError, match="gzip"):
        in_memory.deserialize()


# ---- three processes ----------------------------------------------------------------------------


def test_outsider_flood_neither_deposes_the_leader_nor_stalls_commits(
    make_cluster: Callable[..., Any],
) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader(timeout_s=10.0)
    terms = {node.node_id: node.status()["term"] for node in cluster.nodes}
    before = leader.status()
    commits = 0
    commit_latencies_s: list[float] = []
    with flooding(leader.port) as flooder:
        while flooder.poll() is None:
            started = time.monotonic()
            reply = leader.submit(f"during-flood-{commits}", timeout_s=2.0)
            commit_latencies_s.append(time.monotonic() - started)
            assert reply.get("ok") == [commits + 1, f"during-flood-{commits}"], (
                f"commit {commits} failed under the flood: {reply}"
            )
            commits += 1
            time.sleep(0.05)
        out, _ = flooder.communicate(timeout=30)
    report = json.loads(out)
    for node in cluster.nodes:
        status = node.status()
        assert status["term"] == terms[node.node_id], f"the flood moved node {node.node_id}'s term"
        assert status["leader_id"] == leader.node_id
    assert commits >= FLOOD_S / 0.5, f"only {commits} commits in {FLOOD_S} s of flood"
    threads = report["threads"]
    assert all(t["closed_by_node"] >= 1 for t in threads), threads  # every connection closed
    after = leader.status()
    closed = sum(t["closed_by_node"] for t in threads)
    assert after["oversized_frames"] - before["oversized_frames"] >= FLOOD_CONNECTIONS
    print(
        f"flood: {commits} commits, latency max {max(commit_latencies_s) * 1000:.0f} ms; "
        f"{sum(t['connects'] for t in threads)} connects, {closed} closed by the node"
    )
    _harness.assert_clean(cluster)


def test_insider_inflation_bomb_is_refused_without_inflating(
    make_cluster: Callable[..., Any],
) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader(timeout_s=10.0)
    target, other = cluster.alive(exclude=(leader,))
    bomb = zlib_bomb(BOMB_INFLATED_BYTES)
    assert len(bomb) < 2 * 1024 * 1024
    assert target.proc is not None
    peak_before = peak_rss_bytes(target.proc.pid)
    before = target.status()
    # Impersonating the other follower (an insider may: it holds the secret).
    with insider_session(target.port, other.address) as sock:
        sock.settimeout(None)
        sock.sendall(wire_frame(bomb, SECRET, deflated=True))
        closed = drained_until_closed(sock, timeout_s=10.0)
    growth = peak_rss_bytes(target.proc.pid) - peak_before
    assert growth < PEAK_RSS_GROWTH_BYTES_MAX, f"peak RSS grew {growth >> 20} MiB"
    assert closed, "the connection that sent the bomb is still open"
    after = target.status()
    assert after["oversized_inflations"] - before["oversized_inflations"] == 1
    # Before the handshake the cap is MAX_HANDSHAKE_FRAME_BYTES, on what a frame inflates to
    # too: a 1.5 KB frame of 256 KiB of zeros.
    small_bomb = wire_frame(bytes(256 * 1024), SECRET)
    assert len(small_bomb) <= MAX_HANDSHAKE_FRAME_BYTES < 256 * 1024 < MAX_INFLATED_BYTES
    with _connect(target.port) as sock:
        sock.sendall(small_bomb)
        assert _closed_by_peer(sock)
    assert target.status()["oversized_inflations"] - after["oversized_inflations"] == 1
    print(f"bomb of {len(bomb)} bytes: peak RSS of the node grew {growth >> 20} MiB")
    # An insider may name only a voter: pysyncobj's read-only nodes are refused.
    with insider_session(target.port, "readonly") as sock:
        assert drained_until_closed(sock, timeout_s=5.0)
    assert target.status()["handshakes_refused"] - before["handshakes_refused"] == 1
    assert leader.submit("after-bomb")["ok"] == [1, "after-bomb"]
    cluster.wait_states(["after-bomb"], cluster.nodes)
    _harness.assert_clean(cluster)


def test_a_trickling_connection_is_closed_at_the_handshake_deadline(
    make_cluster: Callable[..., Any],
) -> None:
    cluster = make_cluster(3)
    cluster.leader(timeout_s=10.0)
    node = cluster.nodes[0]
    before = node.status()
    (connect_timeout_s,) = (
        f.default for f in dataclasses.fields(QuorumConfig) if f.name == "connect_timeout_s"
    )
    with _connect(node.port) as sock:
        sock.sendall(struct.pack("i", 1000))  # a frame that, a byte per 50 ms, never completes
        closed_after_s = closed_within(sock, timeout_s=8.0, trickle_every_s=0.05)
    assert closed_after_s is not None, "a trickling connection stayed open for 8 s"
    # The deadline is checked every tick; allow for a loaded machine.
    assert connect_timeout_s - 0.1 <= closed_after_s < connect_timeout_s + 1.5, closed_after_s
    assert node.status()["handshake_timeouts"] - before["handshake_timeouts"] == 1


def test_connections_in_the_handshake_are_capped_oldest_first(
    make_cluster: Callable[..., Any],
) -> None:
    # A long handshake deadline, so only the cap closes connections here.
    cluster = make_cluster(3, extra={"connect_timeout_s": 20.0})
    leader = cluster.leader(timeout_s=10.0)
    node = cluster.alive(exclude=(leader,))[0]
    extra = 16
    socks: list[socket.socket] = []
    try:
        for _ in range(MAX_UNAUTHENTICATED_CONNECTIONS + extra):
            socks.append(_connect(node.port))
            time.sleep(0.005)  # accepted in this order

        def closed() -> list[int]:
            readable, _, _ = select.select(socks, [], [], 0)
            return sorted(socks.index(s) for s in readable)

        wait_until(f"{extra} connections closed", lambda: len(closed()) >= extra, 5.0)
        time.sleep(0.2)
        assert closed() == list(range(extra)), "not the oldest, or more than the excess"
        for index in range(extra):
            assert _closed_by_peer(socks[index], timeout_s=0.1)
        assert node.status()["handshakes_evicted"] == extra
        assert leader.submit("while-capped")["ok"] == [1, "while-capped"]
        cluster.wait_states(["while-capped"], cluster.nodes)
    finally:
        for sock in socks:
            sock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="flood a Raft port (see flood())")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=FLOOD_CONNECTIONS)
    parser.add_argument("--seconds", type=float, default=FLOOD_S)
    parser.add_argument("--frame-bytes", type=int, default=FLOOD_FRAME_BYTES)
    args = parser.parse_args()
    print(json.dumps(flood(args.port, args.connections, args.seconds, args.frame_bytes)))
