"""One Raft node in a child process, driven by JSON lines on stdin (one reply line each).

Run as ``python quorum_node.py '<json config>'``. The config holds ``node_id``, ``voters``
(``{"1": "127.0.0.1:7001", ...}``), ``secret``, ``data_dir`` and optional ``QuorumConfig`` fields
under ``"extra"``. The first line on stdout is ``{"ready": true}`` (or ``{"error": ...}``).

Requests: ``{"op": "status"}``, ``{"op": "is_leader"}``, ``{"op": "state"}`` (the applied
commands), ``{"op": "submit", "command": "<text>", "timeout_s": 2.0}``, ``{"op": "snapshot"}``,
``{"op": "submit_many", "prefix": "c", "count": 40, "timeout_s": 5.0}`` (``submit_async``,
then waits for every callback), ``{"op": "close"}``. The machine is an append-only list of
commands: deterministic, cbor2 snapshot, ``apply`` returns ``cbor2([position, command])``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
from typing import Any

import cbor2

from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import NotLeaderError, QuorumConfig, QuorumError


class ListMachine:
    """Append-only list; runs on the Raft thread only (the main thread reads a copy)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, command: bytes) -> bytes:
        self.items.append(command)
        return bytes(cbor2.dumps([len(self.items), command]))

    def snapshot(self) -> bytes:
        return bytes(cbor2.dumps(self.items))

    def restore(self, data: bytes) -> None:
        self.items = list(cbor2.loads(data))


def _status(quorum: RaftQuorum) -> dict[str, Any]:
    status = dataclasses.asdict(quorum.status())
    status["role"] = str(status["role"])
    status["voters"] = [list(v) for v in status["voters"]]
    return status


def _handle(quorum: RaftQuorum, machine: ListMachine, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "status":
        return {"status": _status(quorum)}
    if op == "is_leader":
        return {"is_leader": quorum.is_leader(), "leader_id": quorum.leader_id()}
    if op == "state":
        return {"state": [item.decode() for item in list(machine.items)]}
    if op == "snapshot":
        quorum.force_snapshot()
        return {"ok": True}
    if op == "submit":
        try:
            result = quorum.submit(request["command"].encode(), float(request["timeout_s"]))
        except NotLeaderError as exc:
            return {"error": type(exc).__name__, "leader_id": exc.leader_id}
        except QuorumError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        position, command = cbor2.loads(result)
        return {"ok": [position, command.decode()]}
    if op == "submit_many":
        return _submit_many(quorum, request["prefix"], int(request["count"]), request["timeout_s"])
    raise ValueError(f"unknown op {op!r}")


def _submit_many(quorum: RaftQuorum, prefix: str, count: int, timeout_s: float) -> dict[str, Any]:
    lock = threading.Lock()
    done = threading.Event()
    outcomes: list[str] = []

    def callback(result: bytes | None, error: QuorumError | None) -> None:
        with lock:
            outcomes.append("ok" if error is None else type(error).__name__)
            if len(outcomes) == count:
                done.set()

    for i in range(count):
        quorum.submit_async(f"{prefix}{i}".encode(), timeout_s, callback)
    done.wait(timeout_s + 5.0)
    with lock:
        return {"ok": outcomes.count("ok"), "outcomes": sorted(set(outcomes)), "n": len(outcomes)}


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    spec = json.loads(sys.argv[1])
    config = QuorumConfig(
        node_id=int(spec["node_id"]),
        voters={int(k): v for k, v in spec["voters"].items()},
        secret=spec["secret"],
        data_dir=spec["data_dir"],
        **spec.get("extra", {}),
    )
    machine = ListMachine()
    try:
        quorum = RaftQuorum(config, machine)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "close":
                break
            try:
                reply = _handle(quorum, machine, request)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        quorum.close()
    print(json.dumps({"closed": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
