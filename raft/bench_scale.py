"""Scale of the metadata quorum (issue 3): 100,000 partitions in the state machine, 10,000
through a real 3-voter quorum. Run by ``make bench-quorum-scale``::

    python -m raftlog.raft.bench_scale [--partitions 100000] [--small-topics 10000]
        [--alters 100000] [--quorum-partitions 10000] [--quorum-alters 20000]
        [--inflight-max 1000] [--runs 5] [--session-timeout-ms 2000]
        [--skip-inproc] [--skip-quorum] [--out bench-results/quorum.json]

ZooKeeper-era Kafka topped out around ten thousand topics; this measures how far one Raft
metadata log goes. A benchmark, not a test: it prints a table and merges its figures into
``--out`` (keys it does not write, e.g. ``bench_failover``'s, are kept). A wrong result (a command
refused that should have applied, a snapshot that does not round-trip, a node that never catches
up, a child that misbehaves) prints what was measured so far, writes nothing and exits 1.
Commands lost to an election (a Raft-thread stall longer than the election timeout) are a
finding, not an error: they are counted, listed as warnings and written (``--strict``: exit 1).

In one process — the pure state machine behind ``MetadataStore.apply`` (bytes in, bytes out, as
the Raft thread calls it); ``time.perf_counter``:

* **create** — ``--brokers`` registered, unfenced brokers; ``--partitions`` partitions as
  CreateTopic commands ("batches") of ``--partitions-per-topic`` each, RF
  ``--replication-factor``. Each command is prepared as ``ActiveController.create_topic`` does
  (``leader_counts()`` + ``assign_replicas`` + ``encode_command``: ``create_prep_s_*``), then
  applied (decode + apply + result encode: ``create_*_partitions_s``, per batch and in total).
  Then the same number of partitions as ``--small-topics`` topics of
  ``--small-topic-partitions`` (Kafka's "how many topics" question), into a fresh state:
  ``leader_counts()`` scans every partition for each topic, so preparing is quadratic in topics.
* **snapshot** — ``MetadataState.snapshot()`` at that size: bytes, take time, and the time of
  ``MetadataState.from_snapshot`` (best of ``--repeat``); the loaded state must equal the original.
* **alter** — ``--alters`` AlterPartition commands, encoded before the clock starts: a first pass
  shrinks the ISR of each of ``alters / 2`` partitions by its last follower, a second pass
  expands it back, each naming the partition epoch it will find. Every one must apply cleanly.

Through a real quorum — ``--voters`` child processes (this module with ``--child``), each a
``RaftQuorum`` with the default timers over a ``MetadataStore`` on 127.0.0.1, as
``bench_failover``; ``time.monotonic`` (system-wide on Linux) across processes:

* **load** — ``--quorum-partitions`` partitions as CreateTopic commands prepared as above and
  submitted one at a time to the leader (``submit``: committed and applied there).
* **commit rate** — ``--quorum-alters`` AlterPartition commands through ``submit_async``, at most
  ``--inflight-max`` unanswered; rate = commands / (last callback - first submit). Log
  compactions (every ``log_compaction_min_entries`` = 5000 entries, a full snapshot on the Raft
  thread) fall inside the window, as they would in production; the longest ``snapshot()`` and the
  number of elections (term changes) are reported with it.
* **catch-up** — a follower is SIGKILLed, its data directory deleted, the leader forced to
  compact, and the follower restarted empty: time from spawning its process until it has applied
  the leader's version (a snapshot install plus a short log tail; interpreter start included).
* **failover** — ``--runs`` times: kill -9 the Raft leader after ``--stable-s`` idle. Voter i
  co-hosts broker i, so that broker dies with it; the survivors heartbeat for every other
  broker. Three instants on the survivor that takes over, each minus the instant before
  ``kill``: ``failover_ms`` — its first commit (an AllocateProducerIds probe), the raw Raft
  figure; ``controller_active_ms`` — ``is_leader()`` held (polled every 10 ms) and its new
  ``ControllerCore`` returned its first ``decisions()`` (one scan over every partition);
  ``broker_fenced_ms`` — the FenceBroker of the dead broker committed, which moves its
  leaderships. The last includes ``--session-timeout-ms``: a new controller gives every broker one
  full session before it fences it (controller.py), so broker fencing follows Raft failover by at
  least a session timeout. Between runs the killed node restarts from its data directory and the
  leader heals the metadata (unfence, expand ISRs, preferred elections), so every run starts
  from the same shape. A run in which leadership moves again before the fence is void, repeated
  (at most ``--runs`` extra) and counted.

Every wait is bounded; every child is killed by PID on the way out and the temporary directory
removed, also on failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cbor2
from rich.console import Console
from rich.table import Table

from .assignment import assign_replicas
from .commands import (
    AllocateProducerIds,
    AlterPartition,
    Command,
    CreateTopic,
    ElectLeader,
    FenceBroker,
    RegisterBroker,
    UnfenceBroker,
    encode_command,
)
from .controller import ControllerConfig, ControllerCore
from .metadata import MetadataState
from .metadata_records import NO_LEADER, Applied
from .quorum import RaftQuorum
from .quorum_types import SNAPSHOT_FILE_NAME, NotLeaderError, QuorumConfig, QuorumError
from .store import MetadataStore

__all__ = [
    "BenchError",
    "Report",
    "alter_commands",
    "count_label",
    "create_topic_command",
    "heal_commands",
    "main",
    "render",
]

_SECRET = "bench-scale-secret"
_INCARNATION = 1  # every simulated broker registers once
_SUBMIT_TIMEOUT_S = 10.0  # one command through the quorum
_REPLY_TIMEOUT_S = 30.0  # a quick op of a child (status, ready)
_PHASE_TIMEOUT_S = 300.0  # load / alter / heal inside a child
_PROBE_DEADLINE_S = 10.0  # a survivor gives up probing after this
_PROBE_PAUSE_S = 0.002
_CONTROLLER_TICK_S = 0.01  # how often the simulated controller shell polls is_leader/decisions
_CONVERGE_TIMEOUT_S = 60.0
_CATCH_UP_TIMEOUT_S = 120.0
_ELECT_CHUNK = 1000  # partitions per ElectLeader (the controller's own batch size)
_HEAL_ROUNDS = 5
_LOG_TAIL_LINES = 20


class BenchError(RuntimeError):
    """The benchmark could not produce a trustworthy figure; the message says why."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# ---- commands (pure) ----------------------------------------------------------------------


def count_label(count: int) -> str:
    """``100000`` → ``"100k"``, ``2500`` → ``"2500"``: the suffix of size-dependent keys."""
    return f"{count // 1000}k" if count % 1000 == 0 and count >= 1000 else str(count)


def topic_name(index: int) -> str:
    return f"scale-{index:05d}"


def broker_commands(brokers: int) -> list[Command]:
    """Register and unfence brokers 1..brokers (incarnation 1, no racks)."""
    out: list[Command] = []
    for b in range(1, brokers + 1):
        out.append(RegisterBroker(b, f"127.0.0.1:{19000 + b}", _INCARNATION))
        out.append(UnfenceBroker(b, _INCARNATION))
    return out


def create_topic_command(
    state: MetadataState, name: str, partitions: int, replication_factor: int
) -> CreateTopic:
    """A CreateTopic prepared as ``ActiveController.create_topic`` prepares it."""
    live = {b.broker_id: b.rack for b in state.brokers.values() if not b.fenced}
    counts = state.leader_counts()
    assignment = assign_replicas(live, partitions, replication_factor, leader_counts=counts)
    return CreateTopic(name, tuple(assignment))


def alter_commands(state: MetadataState, count: int) -> list[AlterPartition]:
    """``count`` AlterPartition commands that each apply cleanly, in this order, to ``state``.

    They cycle over the first ``max(1, count // 2)`` led partitions with RF > 1: a partition
    whose ISR is full loses its last follower, any other gets its full replica list back; each
    names the leader, its leader epoch and the partition epoch the previous command left.
    """
    records = [
        r for r in state.partitions.values() if r.leader != NO_LEADER and len(r.replicas) > 1
    ]
    _require(bool(records), "AlterPartition needs a led partition with RF > 1")
    chosen = records[: max(1, min(len(records), count // 2))]
    isr = {r.key: r.isr for r in chosen}
    epoch = {r.key: r.partition_epoch for r in chosen}
    out: list[AlterPartition] = []
    for i in range(count):
        record = chosen[i % len(chosen)]
        current = isr[record.key]
        if set(current) == set(record.replicas):
            follower = [b for b in current if b != record.leader][-1]
            wanted = tuple(b for b in current if b != follower)
        else:
            wanted = record.replicas
        out.append(
            AlterPartition(
                record.topic,
                record.partition,
                record.leader,
                record.leader_epoch,
                epoch[record.key],
                wanted,
            )
        )
        epoch[record.key] += 1
        isr[record.key] = wanted
    return out


def heal_commands(state: MetadataState) -> list[Command]:
    """What brings ``state`` back to its freshly created shape, in log order: unfence every
    fenced broker, expand every led partition's ISR back to its replicas, then preferred
    elections. A partition that was offline is elected by the unfence, which changes its
    epochs: its expansion waits for the next round (the caller repeats until healthy)."""
    unfence: list[Command] = [
        UnfenceBroker(b.broker_id, b.incarnation) for b in state.brokers.values() if b.fenced
    ]
    expand: list[Command] = []
    moved: list[tuple[str, int]] = []
    for record in state.partitions.values():
        if record.leader != NO_LEADER and record.isr != record.replicas:
            expand.append(  # the leader's epochs are unchanged by the unfences before it
                AlterPartition(
                    record.topic,
                    record.partition,
                    record.leader,
                    record.leader_epoch,
                    record.partition_epoch,
                    record.replicas,
                )
            )
        if record.leader != record.replicas[0]:
            moved.append(record.key)
    elect: list[Command] = [
        ElectLeader(tuple(moved[i : i + _ELECT_CHUNK]), preferred=True)
        for i in range(0, len(moved), _ELECT_CHUNK)
    ]
    return unfence + expand + elect


def unhealthy_partitions(state: MetadataState) -> int:
    """Partitions not in their freshly created shape (ISR = replicas, preferred leader)."""
    return sum(
        1 for r in state.partitions.values() if r.isr != r.replicas or r.leader != r.replicas[0]
    )


# ---- the report (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """Every figure of one run, keyed as in ``quorum.json``, plus how it was measured."""

    figures: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def _format(key: str, value: Any) -> str:
    if isinstance(value, list):
        return " ".join(f"{v:,.0f}" for v in value)
    if key.endswith("_bytes") or "_bytes_" in key:
        return f"{value:,.0f} B ({value / 1e6:.2f} MB)"
    if key.endswith("_per_s") or "_per_s_" in key:
        return f"{value:,.0f} /s"
    if key.endswith("_us"):
        return f"{value:,.1f} µs"
    if key.endswith("_ms") or "_ms_" in key:
        return f"{value:,.1f} ms"
    if key.endswith("_s") or "_s_" in key:
        return f"{value:,.3f} s"
    return f"{value:,}"


def render(report: Report) -> Table:
    """The figures as a table, in the order they were measured. Pure: no IO."""
    meta = report.meta
    table = Table(
        title="raftlog metadata quorum at scale",
        caption=(
            f"in-process: {meta.get('brokers', '?')} brokers, RF "
            f"{meta.get('replication_factor', '?')}, "
            f"{meta.get('partitions_per_topic', '?')} partitions per CreateTopic\n"
            f"quorum: {meta.get('voters', '?')} voters on 127.0.0.1, "
            f"{meta.get('quorum_partitions', '?')} partitions, "
            f"session timeout {meta.get('session_timeout_ms', '?')} ms "
            "(included in broker_fenced_ms)\n"
            f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}"
        ),
        caption_justify="left",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.figures.items():
        table.add_row(key, _format(key, value))
    return table


# ---- in-process phases --------------------------------------------------------------------


@dataclass(slots=True)
class _Created:
    prep_s: float = 0.0  # leader_counts + assign_replicas + encode, as the controller does
    apply_s: list[float] = field(default_factory=list)  # one per CreateTopic
    leader_counts_ms_last: float = 0.0


def _create_topics(
    store: MetadataStore, topics: int, partitions_per_topic: int, args: argparse.Namespace
) -> _Created:
    """Create ``topics`` topics through ``store.apply``, preparing each as the controller does."""
    created = _Created()
    for t in range(topics):
        started = time.perf_counter()
        with store.read() as state:
            counted = time.perf_counter()
            state.leader_counts()  # timed alone once more (not in prep_s): it grows with state
            counted_s = time.perf_counter() - counted
            command = create_topic_command(
                state, topic_name(t), partitions_per_topic, args.replication_factor
            )
        data = encode_command(command)
        prepared = time.perf_counter()
        result = store.apply(data)
        created.apply_s.append(time.perf_counter() - prepared)
        created.prep_s += prepared - started - counted_s
        created.leader_counts_ms_last = counted_s * 1000
        _require("error" not in cbor2.loads(result), f"CreateTopic refused: {result!r}")
    return created


def _registered_store(brokers: int) -> MetadataStore:
    store = MetadataStore()
    for command in broker_commands(brokers):
        _require("error" not in cbor2.loads(store.apply(encode_command(command))), "register")
    return store


def _inproc(args: argparse.Namespace, figures: dict[str, Any], console: Console) -> None:
    label = count_label(args.partitions)
    store = _registered_store(args.brokers)
    topics = args.partitions // args.partitions_per_topic
    created = _create_topics(store, topics, args.partitions_per_topic, args)
    total_s = sum(created.apply_s)
    figures[f"create_{label}_partitions_s"] = total_s
    figures["create_partitions_per_s"] = args.partitions / total_s
    figures["create_commands_per_s"] = topics / total_s
    figures["create_batch_ms_median"] = statistics.median(created.apply_s) * 1000
    figures["create_batch_ms_max"] = max(created.apply_s) * 1000
    figures[f"create_prep_s_{label}"] = created.prep_s
    figures[f"leader_counts_ms_{label}"] = created.leader_counts_ms_last
    console.print(f"create: {args.partitions:,} partitions in {total_s:.3f} s")

    with store.read() as state:
        take_s, load_s = [], []
        blob = b""
        for _ in range(args.repeat):
            started = time.perf_counter()
            blob = state.snapshot()
            taken = time.perf_counter()
            loaded = MetadataState.from_snapshot(blob)
            take_s.append(taken - started)
            load_s.append(time.perf_counter() - taken)
            _require(
                loaded.partitions == state.partitions
                and loaded.topics == state.topics
                and loaded.brokers == state.brokers
                and loaded.version == state.version,
                "the snapshot does not round-trip",
            )
            del loaded  # one state at a time: a second one slows the collector
        alters = [encode_command(c) for c in alter_commands(state, args.alters)]
    figures[f"snapshot_bytes_{label}"] = len(blob)
    figures[f"snapshot_take_s_{label}"] = min(take_s)
    figures[f"snapshot_load_s_{label}"] = min(load_s)
    console.print(f"snapshot: {len(blob):,} bytes, take {min(take_s):.3f} s")

    started = time.perf_counter()
    results = [store.apply(data) for data in alters]
    elapsed = time.perf_counter() - started
    refused = sum(1 for result in results if "error" in cbor2.loads(result))
    _require(refused == 0, f"{refused} AlterPartition commands were refused")
    figures["alter_partition_apply_per_s"] = len(alters) / elapsed
    figures["alter_partition_apply_us"] = elapsed / len(alters) * 1e6
    console.print(f"alter: {len(alters):,} AlterPartition applied in {elapsed:.3f} s")

    del store, results, alters  # the small-topic state is measured alone
    if args.small_topics:
        small = _create_topics(
            _registered_store(args.brokers), args.small_topics, args.small_topic_partitions, args
        )
        topics_label = f"{count_label(args.small_topics)}_topics"
        figures[f"create_{topics_label}_s"] = sum(small.apply_s)
        figures[f"create_{topics_label}_prep_s"] = small.prep_s
        console.print(
            f"create: {args.small_topics:,} topics × {args.small_topic_partitions} partitions "
            f"in {sum(small.apply_s):.3f} s, prepared in {small.prep_s:.3f} s"
        )


# ---- child: one voter -----------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class _TimedStore(MetadataStore):
    """A ``MetadataStore`` that remembers how long its last apply and restore and its longest
    snapshot took, and how many partitions the last apply changed. Written on the Raft thread
    (``snapshot_s_max`` is also reset by the op thread: one float, a harmless race)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_apply_s = 0.0
        self.last_changed_partitions = 0
        self.last_restore_s: float | None = None
        self.snapshot_s_max = 0.0  # the longest snapshot() since the last reset (a Raft stall)
        self.add_observer(self._count)

    def _count(self, applied: Applied | None, restored: bool) -> None:
        self.last_changed_partitions = 0 if applied is None else len(applied.partitions)

    def apply(self, command: bytes) -> bytes:
        started = time.perf_counter()
        result = super().apply(command)
        self.last_apply_s = time.perf_counter() - started
        return result

    def restore(self, data: bytes) -> None:
        started = time.perf_counter()
        super().restore(data)
        self.last_restore_s = time.perf_counter() - started

    def snapshot(self) -> bytes:
        started = time.perf_counter()
        data = super().snapshot()
        self.snapshot_s_max = max(self.snapshot_s_max, time.perf_counter() - started)
        return data


class _Voter:
    """One voter in a child process, driven by JSON lines on stdin (one or more reply lines,
    each a map whose key names the op). Ops run on the main thread, one at a time; ``probe``
    starts a prober and a controller thread that report on their own."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.node_id = int(spec["node_id"])
        self.store = _TimedStore()
        self.catch_up_version: int | None = spec.get("catch_up_version")
        self.caught_up_at: float | None = None
        if self.catch_up_version is not None:
            self.store.add_observer(self._watch_catch_up)
        self.quorum = RaftQuorum(
            QuorumConfig(
                node_id=self.node_id,
                voters={int(k): v for k, v in spec["voters"].items()},
                secret=_SECRET,
                data_dir=spec["data_dir"],
            ),
            self.store,
        )
        self._out = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def emit(self, reply: dict[str, Any]) -> None:
        with self._out:
            print(json.dumps(reply), flush=True)

    def _watch_catch_up(self, applied: Applied | None, restored: bool) -> None:
        target = self.catch_up_version
        if self.caught_up_at is None and target is not None and self.store.version >= target:
            self.caught_up_at = time.monotonic()

    # ---- ops ------------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> bool:
        """Run one op; False when told to close."""
        op = request["op"]
        if op == "close":
            return False
        if op == "status":
            self.emit({"status": self._status()})
        elif op == "load":
            self.emit({"load": self._load(request)})
        elif op == "alter":
            self.emit({"alter": self._alter(request)})
        elif op == "heal":
            self.emit({"heal": self._heal(request)})
        elif op == "compact":
            self.emit({"compact": self._compact()})
        elif op == "probe":
            self._start_probe(request)
        elif op == "stop_probe":
            self._stop.set()
        else:
            raise ValueError(f"unknown op {op!r}")
        return True

    def _status(self) -> dict[str, Any]:
        status = self.quorum.status()
        with self.store.read() as state:
            version, partitions = state.version, len(state.partitions)
        return {
            "is_leader": self.quorum.is_leader(),
            "leader_id": self.quorum.leader_id(),
            "version": version,
            "partitions": partitions,
            "restores": self.store.restores,
            "last_restore_s": self.store.last_restore_s,
            "caught_up_at": self.caught_up_at,
            "snapshots_written": status.snapshots_written,
            "submit_timeouts": status.submit_timeouts,
            "applied_index_regressions": status.applied_index_regressions,
        }

    def _submit(self, command: Command) -> dict[str, Any]:
        result: dict[str, Any] = cbor2.loads(
            self.quorum.submit(encode_command(command), _SUBMIT_TIMEOUT_S)
        )
        return result

    def _load(self, request: dict[str, Any]) -> dict[str, Any]:
        for command in broker_commands(int(request["brokers"])):
            result = self._submit(command)
            _require("error" not in result, f"{command} refused: {result}")
        partitions, per_topic = int(request["partitions"]), int(request["partitions_per_topic"])
        batch_s: list[float] = []
        started = time.perf_counter()
        for t in range(-(-partitions // per_topic)):
            size = min(per_topic, partitions - t * per_topic)
            begun = time.perf_counter()
            with self.store.read() as state:
                command = create_topic_command(
                    state, topic_name(t), size, int(request["replication_factor"])
                )
            result = self._submit(command)
            _require("error" not in result, f"CreateTopic refused: {result}")
            batch_s.append(time.perf_counter() - begun)
        return {"elapsed_s": time.perf_counter() - started, "batch_s": batch_s}

    def _pipeline(self, commands: Sequence[Command], inflight_max: int) -> dict[str, Any]:
        """Submit every command through ``submit_async``, at most ``inflight_max`` unanswered."""
        encoded = [encode_command(c) for c in commands]
        slots = threading.BoundedSemaphore(inflight_max)
        tally = {"ok": 0, "refused": 0, "failed": 0}
        problems: list[str] = []  # at most one kept
        lock = threading.Lock()
        finished = threading.Event()
        if not encoded:
            finished.set()

        def done(result: bytes | None, error: QuorumError | None) -> None:
            kind = "failed" if error is not None or result is None else "ok"
            if kind == "ok" and result is not None and "error" in cbor2.loads(result):
                kind = "refused"
            with lock:
                tally[kind] += 1
                if kind != "ok" and not problems:
                    problems.append(repr(error) if error else repr(cbor2.loads(result or b"\xa0")))
                answered = sum(tally.values())
            slots.release()
            if answered == len(encoded):
                finished.set()

        deadline = time.monotonic() + _PHASE_TIMEOUT_S
        before = self.quorum.status()
        self.store.snapshot_s_max = 0.0
        started = time.perf_counter()
        for data in encoded:
            if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise BenchError(f"{inflight_max} commands unanswered for {_PHASE_TIMEOUT_S} s")
            self.quorum.submit_async(data, _SUBMIT_TIMEOUT_S, done)
        if not finished.wait(max(0.0, deadline - time.monotonic())):
            raise BenchError(f"not every command was answered within {_PHASE_TIMEOUT_S} s")
        elapsed = time.perf_counter() - started
        after = self.quorum.status()
        return {
            "elapsed_s": elapsed,
            "count": len(encoded),
            **tally,
            "problem": problems[0] if problems else None,
            "compactions": after.snapshots_written - before.snapshots_written,
            "snapshot_ms_max": self.store.snapshot_s_max * 1000,
            "elections": after.term - before.term,
        }

    def _alter(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.store.read() as state:
            commands = alter_commands(state, int(request["count"]))
        return self._pipeline(commands, int(request["inflight_max"]))

    def _heal(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.store.read() as state:
            commands = heal_commands(state)
        outcome = self._pipeline(commands, int(request["inflight_max"]))
        with self.store.read() as state:
            outcome["unhealthy"] = unhealthy_partitions(state)
        return outcome

    def _compact(self) -> dict[str, Any]:
        before = self.quorum.status().snapshots_written
        started = time.perf_counter()
        self.quorum.force_snapshot()
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        while self.quorum.status().snapshots_written == before:
            if time.monotonic() > deadline:
                raise BenchError(f"no snapshot written within {_REPLY_TIMEOUT_S} s")
            time.sleep(0.005)
        path = os.path.join(self.quorum.config.data_dir, SNAPSHOT_FILE_NAME)
        return {"elapsed_s": time.perf_counter() - started, "file_bytes": os.path.getsize(path)}

    # ---- failover ---------------------------------------------------------------------------

    def _start_probe(self, request: dict[str, Any]) -> None:
        for thread in self._threads:
            thread.join(_REPLY_TIMEOUT_S)
            _require(not thread.is_alive(), "a previous probe thread is still running")
        self._stop.clear()
        dead, brokers = int(request["dead_broker"]), int(request["brokers"])
        session_ms = int(request["session_timeout_ms"])
        self._threads = [
            threading.Thread(target=self._probe, daemon=True),
            threading.Thread(target=self._control, args=(dead, brokers, session_ms), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _probe(self) -> None:
        """Submit until a commit succeeds here (this node became leader), or until stopped."""
        command = encode_command(AllocateProducerIds(self.node_id, 1))
        deadline = time.monotonic() + _PROBE_DEADLINE_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.quorum.submit(command, 0.5)
            except NotLeaderError:
                self._stop.wait(_PROBE_PAUSE_S)
                continue
            except QuorumError:
                continue
            self.emit({"probe": time.monotonic()})
            return
        self.emit({"probe": None})

    def _control(self, dead_broker: int, brokers: int, session_timeout_ms: int) -> None:
        """The controller shell in miniature: once this node leads, a fresh ControllerCore,
        heartbeats for every live broker, its decisions submitted, until the dead broker is
        fenced (or stopped / out of time)."""
        report: dict[str, Any] = {"active_at": None, "fenced_at": None}
        config = ControllerConfig(
            session_timeout_ms=session_timeout_ms, leader_rebalance_interval_ms=None
        )
        live = [b for b in range(1, brokers + 1) if b != dead_broker]
        deadline = time.monotonic() + _PROBE_DEADLINE_S + session_timeout_ms / 1000
        core: ControllerCore | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self.quorum.is_leader():
                if core is not None:
                    report["lost_leadership"] = True
                core = None  # a new term starts from nothing, as in ActiveController
                self._stop.wait(_CONTROLLER_TICK_S)
                continue
            now = _now_ms()
            if core is None:
                core = ControllerCore(config, now)
            with self.store.read() as state:
                for broker_id in live:
                    core.heartbeat(state, broker_id, _INCARNATION, state.version, now)
                scan_started = time.perf_counter()
                decisions = core.decisions(state, now)
                scan_s = time.perf_counter() - scan_started
            if report["active_at"] is None:
                report["active_at"] = time.monotonic()
                report["first_decisions_ms"] = scan_s * 1000
            for subject, command in decisions:
                outcome = self._decide(command)
                core.completed(subject)
                if (
                    isinstance(command, FenceBroker)
                    and command.broker_id == dead_broker
                    and outcome.get("ok")
                ):
                    report.update(outcome)
                    report["fenced_at"] = time.monotonic()
            if report["fenced_at"] is not None:
                break
            self._stop.wait(_CONTROLLER_TICK_S)
        self.emit({"controller": report if report["active_at"] is not None else None})

    def _decide(self, command: Command) -> dict[str, Any]:
        """Submit one decision; the result plus what its apply cost (read on the Raft thread
        right after the apply, before anything else can apply)."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def callback(result: bytes | None, error: QuorumError | None) -> None:
            if error is None and result is not None:
                outcome.update(cbor2.loads(result))
                outcome["apply_ms"] = self.store.last_apply_s * 1000
                outcome["changed_partitions"] = self.store.last_changed_partitions
            else:
                outcome["error"] = repr(error)
            done.set()

        self.quorum.submit_async(encode_command(command), _SUBMIT_TIMEOUT_S, callback)
        done.wait(_SUBMIT_TIMEOUT_S + 2.0)
        return outcome

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)
        self.quorum.close()


def _child(spec: dict[str, Any]) -> int:
    voter = _Voter(spec)
    voter.emit({"ready": time.monotonic()})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                if not voter.handle(request):
                    break
            except Exception as exc:  # reported to the parent, which fails the run
                voter.emit({"error": f"{request.get('op')}: {exc!r}"})
    finally:
        voter.close()
    return 0


# ---- parent ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Child:
    """The parent's handle on one voter process. Replies are keyed by op; lines for other keys
    wait in ``stash`` (one per key: every op has at most one outstanding reply)."""

    def __init__(self, node_id: int, voters: dict[int, str], workdir: Path) -> None:
        self.node_id = node_id
        self.data_dir = workdir / f"voter-{node_id}"
        self.log_path = workdir / f"voter-{node_id}.log"
        self.spec: dict[str, Any] = {
            "node_id": node_id,
            "voters": {str(k): v for k, v in voters.items()},
            "data_dir": str(self.data_dir),
        }
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stash: dict[str, Any] = {}
        self.spawned_at = 0.0

    def spawn(self, **extra: Any) -> None:
        spec = {**self.spec, **extra}
        self.lines = queue.Queue()
        self.stash = {}
        self.spawned_at = time.monotonic()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "raftlog.raft.bench_scale", "--child", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def send(self, op: str, **params: Any) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise BenchError(f"voter {self.node_id} is not running")
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()

    def _take(self, line: str | None) -> None:
        if line is None:
            raise BenchError(f"voter {self.node_id} exited:\n{self._log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"voter {self.node_id}: {reply['error']}\n{self._log_tail()}")
        for key, value in reply.items():
            self.stash[key] = value

    def poll(self, key: str) -> tuple[bool, Any]:
        """(True, value) if a reply for ``key`` arrived; never blocks."""
        while key not in self.stash:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return False, None
            self._take(line)
        return True, self.stash.pop(key)

    def expect(self, key: str, timeout_s: float = _REPLY_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while key not in self.stash:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"voter {self.node_id}: no {key!r} within {timeout_s} s") from None
            self._take(line)
        return self.stash.pop(key)

    def call(self, op: str, timeout_s: float = _REPLY_TIMEOUT_S, **params: Any) -> Any:
        self.send(op, **params)
        return self.expect(op, timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _agreed_leader(children: list[_Child], timeout_s: float = 15.0) -> _Child:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = [child.call("status") for child in children]
        leaders = [c for c, a in zip(children, answers, strict=True) if a["is_leader"]]
        if len(leaders) == 1 and all(a["leader_id"] == leaders[0].node_id for a in answers):
            return leaders[0]
        time.sleep(0.05)
    raise BenchError(f"no agreed leader within {timeout_s:.0f} s")


def _converge(children: list[_Child], timeout_s: float = _CONVERGE_TIMEOUT_S) -> int:
    """Wait until every voter applied the same version; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        versions = {int(child.call("status")["version"]) for child in children}
        if len(versions) == 1:
            return versions.pop()
        time.sleep(0.05)
    raise BenchError(f"the voters did not converge within {timeout_s:.0f} s")


def _heal(children: list[_Child], args: argparse.Namespace, warnings: list[str]) -> None:
    """Bring the metadata back to its created shape (not measured). An election can cut a round
    short; the next round runs on whichever node leads then, at most ``_HEAL_ROUNDS`` rounds."""
    for _ in range(_HEAL_ROUNDS):
        _converge(children)
        outcome = _agreed_leader(children).call(
            "heal", _PHASE_TIMEOUT_S, inflight_max=args.inflight_max
        )
        if outcome["unhealthy"] == 0 and outcome["count"] == outcome["ok"]:
            return
        if outcome["elections"]:
            warnings.append(
                f"healing: {outcome['failed']} of {outcome['count']} commands lost to "
                f"{outcome['elections']} election(s) (longest snapshot "
                f"{outcome['snapshot_ms_max']:.0f} ms)"
            )
    raise BenchError(f"the metadata is not healthy after {_HEAL_ROUNDS} rounds")


def _failover_run(
    children: list[_Child], args: argparse.Namespace, warnings: list[str], console: Console
) -> dict[str, Any] | None:
    """One kill -9 of the leader; None if the run is void (leadership moved again before the
    dead broker was fenced: an election after the failover, which ``warnings`` records)."""
    leader = _agreed_leader(children)
    _converge(children)
    time.sleep(args.stable_s)
    survivors = [c for c in children if c is not leader]
    for child in survivors:
        child.send(
            "probe",
            dead_broker=leader.node_id,
            brokers=args.brokers,
            session_timeout_ms=args.session_timeout_ms,
        )
    killed_at = time.monotonic()
    leader.kill()
    winner: _Child | None = None
    probes: dict[int, Any] = {}
    deadline = time.monotonic() + _PROBE_DEADLINE_S + 5.0
    while winner is None and len(probes) < len(survivors) and time.monotonic() < deadline:
        for child in survivors:
            if child.node_id in probes:
                continue
            found, value = child.poll("probe")
            if found:
                probes[child.node_id] = value
                if value is not None:
                    winner = child
                    break
        else:
            time.sleep(0.001)
    if winner is None:
        raise BenchError("no survivor committed after the leader was killed")
    control_timeout_s = _PROBE_DEADLINE_S + args.session_timeout_ms / 1000 + 10.0
    for child in survivors:
        if child is not winner:
            child.send("stop_probe")
            if child.node_id not in probes:
                child.expect("probe")
            child.expect("controller", control_timeout_s)
    control = winner.expect("controller", control_timeout_s)
    leader.spawn()
    leader.expect("ready")
    if control is None or control["fenced_at"] is None:
        warnings.append(
            f"failover run void: node {winner.node_id} took over after "
            f"{(probes[winner.node_id] - killed_at) * 1000:.0f} ms but "
            + (
                "lost leadership before fencing the dead broker"
                if control is not None and control.get("lost_leadership")
                else "did not fence the dead broker in time"
            )
        )
        return None
    run = {
        "failover_ms": (probes[winner.node_id] - killed_at) * 1000,
        "controller_active_ms": (control["active_at"] - killed_at) * 1000,
        "broker_fenced_ms": (control["fenced_at"] - killed_at) * 1000,
        "fence_apply_ms": control["apply_ms"],
        "fence_changed_partitions": control["changed_partitions"],
        "first_decisions_ms": control["first_decisions_ms"],
    }
    console.print(
        f"failover: killed {leader.node_id}, {winner.node_id} committed after "
        f"{run['failover_ms']:.0f} ms, controller active {run['controller_active_ms']:.0f} ms, "
        f"broker fenced {run['broker_fenced_ms']:.0f} ms "
        f"(apply {run['fence_apply_ms']:.1f} ms, {run['fence_changed_partitions']} partitions)"
    )
    return run


def _quorum(
    args: argparse.Namespace,
    workdir: Path,
    figures: dict[str, Any],
    warnings: list[str],
    console: Console,
) -> None:
    label = count_label(args.quorum_partitions)
    # the keys are for 10k partitions; other sizes say theirs
    size = "" if args.quorum_partitions == 10_000 else f"_{label}_partitions"
    voters = {i: f"127.0.0.1:{_free_port()}" for i in range(1, args.voters + 1)}
    children = [_Child(i, voters, workdir) for i in voters]
    try:
        for child in children:
            child.spawn()
        for child in children:
            child.expect("ready")
        leader = _agreed_leader(children)

        load = leader.call(
            "load",
            _PHASE_TIMEOUT_S,
            brokers=args.brokers,
            partitions=args.quorum_partitions,
            partitions_per_topic=args.partitions_per_topic,
            replication_factor=args.replication_factor,
        )
        figures[f"load_{label}_partitions_s_{args.voters}voters"] = load["elapsed_s"]
        figures[f"load_batch_ms_median_{args.voters}voters{size}"] = (
            statistics.median(load["batch_s"]) * 1000
        )
        console.print(f"load: {args.quorum_partitions:,} partitions in {load['elapsed_s']:.3f} s")
        _converge(children)

        alter = leader.call(
            "alter", _PHASE_TIMEOUT_S, count=args.quorum_alters, inflight_max=args.inflight_max
        )
        stem = f"alter_partition_commit_{{}}_{args.voters}voters{size}"
        figures[stem.format("per_s")] = alter["ok"] / alter["elapsed_s"]
        figures[stem.format("compactions")] = alter["compactions"]
        figures[stem.format("snapshot_ms_max")] = alter["snapshot_ms_max"]
        figures[stem.format("elections")] = alter["elections"]
        figures[stem.format("failed")] = alter["failed"]
        console.print(
            f"commit: {alter['ok']:,} AlterPartition in {alter['elapsed_s']:.3f} s "
            f"({alter['compactions']} log compactions, longest snapshot "
            f"{alter['snapshot_ms_max']:.0f} ms, {alter['elections']} elections)"
        )
        _require(alter["refused"] == 0, f"AlterPartition refused by the state machine: {alter}")
        if alter["failed"]:
            warnings.append(
                f"commit rate: {alter['failed']} of {alter['count']} AlterPartition lost to "
                f"{alter['elections']} election(s) (longest snapshot "
                f"{alter['snapshot_ms_max']:.0f} ms on the leader's Raft thread); the rate "
                "counts committed commands only"
            )
        _heal(children, args, warnings)
        version = _converge(children)

        follower = next(c for c in children if c is not leader)
        compact = leader.call("compact")
        follower.kill()
        shutil.rmtree(follower.data_dir)
        follower.spawn(catch_up_version=version)
        follower.expect("ready")
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
        while (status := follower.call("status"))["caught_up_at"] is None:
            _require(time.monotonic() < deadline, "the emptied follower did not catch up")
            time.sleep(0.01)
        _require(status["partitions"] == args.quorum_partitions, f"caught up to {status}")
        figures[f"catch_up_s_{label}_partitions"] = status["caught_up_at"] - follower.spawned_at
        figures[f"catch_up_restore_ms_{label}_partitions"] = (
            status["last_restore_s"] or 0.0
        ) * 1000
        figures[f"snapshot_file_bytes_{label}_partitions"] = compact["file_bytes"]
        figures[f"snapshot_file_write_ms_{label}_partitions"] = compact["elapsed_s"] * 1000
        console.print(
            f"catch-up: {figures[f'catch_up_s_{label}_partitions']:.3f} s "
            f"({status['restores']} snapshot install(s))"
        )
        _converge(children)

        runs: list[dict[str, Any]] = []
        attempts = 0
        while len(runs) < args.runs:
            attempts += 1  # void runs are repeated, within a bound
            _require(attempts <= 2 * args.runs, f"{attempts - 1 - len(runs)} void failover runs")
            run = _failover_run(children, args, warnings, console)
            _heal(children, args, warnings)
            if run is not None:
                runs.append(run)
        figures[f"failover_runs_void_{label}_partitions"] = attempts - len(runs)
        for key in ("failover_ms", "controller_active_ms", "broker_fenced_ms"):
            samples = [run[key] for run in runs]
            figures[f"{key}_median_{label}_partitions"] = statistics.median(samples)
            figures[f"{key}_max_{label}_partitions"] = max(samples)
        figures[f"failover_ms_samples_{label}_partitions"] = [run["failover_ms"] for run in runs]
        figures[f"fence_apply_ms_median_{label}_partitions"] = statistics.median(
            run["fence_apply_ms"] for run in runs
        )
        figures[f"fence_changed_partitions_{label}"] = max(
            run["fence_changed_partitions"] for run in runs
        )
        figures[f"controller_first_decisions_ms_{label}_partitions"] = statistics.median(
            run["first_decisions_ms"] for run in runs
        )
    finally:
        for child in children:  # by PID, each one ours
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.send("close")
                    child.proc.wait(5)
                except (OSError, subprocess.TimeoutExpired, BenchError):
                    pass
            child.kill()


# ---- main -----------------------------------------------------------------------------------


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1) if abs(value) >= 100 else round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _merge_json(path: Path, figures: dict[str, Any]) -> None:
    """Merge into ``path`` (keys not written here are kept); written tmp + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    merged.update(figures)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--brokers", type=int, default=5)
    parser.add_argument("--replication-factor", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=100_000)
    parser.add_argument("--partitions-per-topic", type=int, default=1000)
    parser.add_argument("--small-topics", type=int, default=10_000, help="0: skip")
    parser.add_argument("--small-topic-partitions", type=int, default=10)
    parser.add_argument("--alters", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="snapshot take/load rounds")
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--quorum-partitions", type=int, default=10_000)
    parser.add_argument("--quorum-alters", type=int, default=20_000)
    parser.add_argument("--inflight-max", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stable-s", type=float, default=1.0)
    parser.add_argument("--session-timeout-ms", type=int, default=2000)
    parser.add_argument("--skip-inproc", action="store_true")
    parser.add_argument("--skip-quorum", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any warning")
    parser.add_argument("--out", default="bench-results/quorum.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        for name in ("brokers", "partitions", "partitions_per_topic", "alters", "repeat", "runs"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
        if args.partitions % args.partitions_per_topic or args.small_topics < 0:
            parser.error("--partitions must be a multiple of --partitions-per-topic")
        if not 1 <= args.replication_factor <= args.brokers:
            parser.error("--replication-factor must be in [1, --brokers]")
        if args.voters < 3 or args.inflight_max < 1 or args.quorum_partitions < 1:
            parser.error("--voters >= 3 (one is killed), --inflight-max and partitions >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child is not None:
        return _child(json.loads(args.child))
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    console = Console()
    figures: dict[str, Any] = {}
    warnings: list[str] = []  # commands lost to elections, void runs: measured, not hidden
    meta = {
        "brokers": args.brokers,
        "replication_factor": args.replication_factor,
        "partitions_per_topic": args.partitions_per_topic,
        "voters": args.voters,
        "quorum_partitions": args.quorum_partitions,
        "session_timeout_ms": args.session_timeout_ms,
        "inflight_max": args.inflight_max,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        if not args.skip_inproc:
            _inproc(args, figures, console)
        if not args.skip_quorum:
            with tempfile.TemporaryDirectory(prefix="raftlog-scale-") as tmp:
                _quorum(args, Path(tmp), figures, warnings, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; children killed, temporary files removed[/yellow]")
        return 130
    except BenchError as exc:
        console.print(render(Report({k: _round(v) for k, v in figures.items()}, meta)))
        for warning in warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        console.print(f"[red]benchmark failed (nothing written):[/red] {exc}")
        return 1
    report = Report({k: _round(v) for k, v in figures.items()}, meta)
    console.print(render(report))
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    _merge_json(Path(args.out), {**report.figures, "scale_meta": meta, "scale_warnings": warnings})
    console.print(f"merged into {args.out}")
    return 1 if warnings and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
