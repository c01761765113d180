"""One voter of the scale benchmark (``bench/quorum_scale.py``), in a child process: a
``RaftQuorum`` with the default timers over a ``MetadataStore`` that times its applies, restores
and snapshots, driven by the parent's JSON lines (``bench.common.Child`` / ``serve``).

Ops, each answered ``{op: value}``: ``leader``, ``status``, ``load`` (brokers, then topics one
``submit`` at a time), ``alter`` and ``heal`` (pipelined ``submit_async``), ``compact`` (a forced
snapshot), and ``probe`` — after the parent kills the leader, two threads: one probes for
leadership (``{"probe": ...}``), the other runs the controller shell (``{"controller": ...}``).

The controller is the broker's own shell, ``raftlog.cluster.controller_service.ActiveController``,
on an asyncio loop of its own: once this node leads, heartbeats for every broker but the dead one
(voter i co-hosts broker i) and a ``tick`` every 10 ms — what the broker loop does — until the
dead broker's FenceBroker has committed. Its quorum is wrapped (``_FenceWatch``) to note that
commit on the Raft thread, right after the apply: when, and what the apply cost. No probe of a
late broker's port is given (nothing listens for the simulated brokers), so the dead broker is
fenced when its session expires, as the parent's ``broker_fenced_ms`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from raftlog.cluster.controller_service import ActiveController, ControllerError
from raftlog.raft.commands import (
    AllocateProducerIds,
    Command,
    FenceBroker,
    FenceBrokerPartitions,
    decode_command,
    encode_command,
)
from raftlog.raft.controller import ControllerConfig
from raftlog.raft.metadata import MetadataState
from raftlog.raft.metadata_records import Applied
from raftlog.raft.quorum import RaftQuorum
from raftlog.raft.quorum_types import SNAPSHOT_FILE_NAME, QuorumConfig, QuorumStatus
from raftlog.raft.store import MetadataStore

from .common import (
    PROBE_DEADLINE_S,
    REPLY_TIMEOUT_S,
    BenchError,
    Emitter,
    leader_answer,
    pipeline,
    probe_leadership,
    require,
    serve,
)
from .quorum_scale_commands import (
    INCARNATION,
    alter_commands,
    broker_commands,
    create_topic_command,
    heal_commands,
    refusal,
    topic_name,
    unhealthy_partitions,
)

__all__ = ["PHASE_TIMEOUT_S", "child_main"]

PHASE_TIMEOUT_S = 300.0  # load / alter / heal inside a child
_SECRET = "bench-scale-secret"
_SUBMIT_TIMEOUT_S = 10.0  # one command through the quorum
_CONTROLLER_TICK_S = 0.01  # how often the controller shell ticks (and heartbeats arrive)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class _TimedStore(MetadataStore):
    """A ``MetadataStore`` that remembers how long its last apply and restore, its longest apply
    and its longest snapshot capture (what log compaction costs the Raft thread) took, and how
    many partitions the last apply changed. Written on the Raft thread (the maxima are also
    reset by the op thread: one float each, a harmless race)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_apply_s = 0.0
        self.apply_s_max = 0.0  # the longest apply since the last reset (op thread resets it)
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
        self.apply_s_max = max(self.apply_s_max, self.last_apply_s)
        return result

    def restore(self, data: bytes) -> None:
        started = time.perf_counter()
        super().restore(data)
        self.last_restore_s = time.perf_counter() - started

    def snapshot_encoder(self) -> Callable[[], bytes]:
        # what log compaction costs the Raft thread: the capture (the writer thread encodes)
        started = time.perf_counter()
        encode = super().snapshot_encoder()
        self.snapshot_s_max = max(self.snapshot_s_max, time.perf_counter() - started)
        return encode


class _FenceWatch:
    """The quorum as the controller shell sees it (``controller_service.Quorum``), noting when
    ``fence`` commits: its result, ``fenced_at`` (``time.monotonic`` on the Raft thread, right
    after the apply) and what that apply cost (read before anything else can apply)."""

    def __init__(self, quorum: RaftQuorum, store: _TimedStore, fence: FenceBroker) -> None:
        self.quorum = quorum
        self.store = store
        self._fence = encode_command(fence)
        self._broker_id = fence.broker_id
        self.outcome: dict[str, Any] | None = None  # set once, on the Raft thread
        self.steps = 0  # commands of the fence submitted (its chunks and the FenceBroker)

    def is_leader(self) -> bool:
        return self.quorum.is_leader()

    def leader_id(self) -> int | None:
        return self.quorum.leader_id()

    def status(self) -> QuorumStatus:
        return self.quorum.status()

    def submit_async(
        self, command: bytes, timeout_s: float, callback: Callable[[bytes | None, Any], None]
    ) -> None:
        if command != self._fence:
            decoded = decode_command(command)
            if isinstance(decoded, FenceBrokerPartitions) and decoded.broker_id == self._broker_id:
                self.steps += 1
            self.quorum.submit_async(command, timeout_s, callback)
            return
        self.steps += 1

        def noted(result: bytes | None, error: Any) -> None:
            if error is None and result is not None:
                answer = cbor2.loads(result)
                if answer.get("ok"):
                    self.outcome = {
                        **answer,
                        "fenced_at": time.monotonic(),
                        "apply_ms": self.store.last_apply_s * 1000,
                        "changed_partitions": self.store.last_changed_partitions,
                    }
            callback(result, error)

        self.quorum.submit_async(command, timeout_s, noted)


class _Voter:
    """One voter and its ops. Ops run on the main thread, one at a time; ``probe`` starts a
    prober and a controller thread that answer on their own."""

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
        self.emit = Emitter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # the controller shell's loop, run by each failover's controller thread in turn; kept
        # open between runs, so a late answer to a previous run's decision still finds it
        self._loop = asyncio.new_event_loop()

    def _watch_catch_up(self, applied: Applied | None, restored: bool) -> None:
        target = self.catch_up_version
        if self.caught_up_at is None and target is not None and self.store.version >= target:
            self.caught_up_at = time.monotonic()

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "leader": lambda _: leader_answer(self.quorum),
            "status": lambda _: self._status(),
            "load": self._load,
            "alter": self._alter,
            "heal": self._heal,
            "compact": lambda _: self._compact(),
            "probe": self._start_probe,
            "stop_probe": lambda _: self._stop.set(),
        }

    # ---- ops ------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        status = self.quorum.status()
        with self.store.read() as state:
            version, partitions = state.version, len(state.partitions)
        return {
            **leader_answer(self.quorum),
            "version": version,
            "partitions": partitions,
            "restores": self.store.restores,
            "last_restore_s": self.store.last_restore_s,
            "caught_up_at": self.caught_up_at,
            "snapshots_written": status.snapshots_written,
            "term": status.term,
            "tick_gap_ms_max": status.tick_gap_ms_max,
            "snapshots_discarded": status.snapshots_discarded,
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
            require("error" not in result, f"{command} refused: {result}")
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
            require("error" not in result, f"CreateTopic refused: {result}")
            batch_s.append(time.perf_counter() - begun)
        return {"elapsed_s": time.perf_counter() - started, "batch_s": batch_s}

    def _pipeline(self, commands: Sequence[Command], inflight_max: int) -> dict[str, Any]:
        """Every command through ``submit_async``, at most ``inflight_max`` unanswered; with the
        log compactions, the longest snapshot and the elections (term changes) meanwhile."""
        encoded = [encode_command(c) for c in commands]
        before = self.quorum.status()
        self.store.snapshot_s_max = 0.0
        self.store.apply_s_max = 0.0
        outcome = pipeline(
            self.quorum,
            encoded,
            inflight_max,
            timeout_s=PHASE_TIMEOUT_S,
            submit_timeout_s=_SUBMIT_TIMEOUT_S,
            refusal=refusal,
        )
        require(outcome.complete, f"not every command was answered within {PHASE_TIMEOUT_S} s")
        after = self.quorum.status()
        return {
            "elapsed_s": outcome.elapsed_s,
            "count": outcome.count,
            "ok": outcome.ok,
            "refused": outcome.refused,
            "failed": outcome.failed,
            "problem": outcome.problem,
            "compactions": after.snapshots_written - before.snapshots_written,
            "snapshot_ms_max": self.store.snapshot_s_max * 1000,
            "apply_ms_max": self.store.apply_s_max * 1000,
            "tick_gap_ms_max": after.tick_gap_ms_max,
            "elections": after.term - before.term,
        }

    def _records(self) -> MetadataState:
        """The brokers and partitions as they are now, copied under the store's lock (a few
        ms): the commands are built from the copy, so that the driver never holds the lock
        the Raft thread applies under for a scan of every partition (0.1-0.2 s at 100k)."""
        copy = MetadataState()
        with self.store.read() as state:
            copy.version = state.version
            copy.brokers = dict(state.brokers)
            copy.partitions = dict(state.partitions)
        return copy

    def _alter(self, request: dict[str, Any]) -> dict[str, Any]:
        commands = alter_commands(self._records(), int(request["count"]))
        return self._pipeline(commands, int(request["inflight_max"]))

    def _heal(self, request: dict[str, Any]) -> dict[str, Any]:
        commands = heal_commands(self._records())
        outcome = self._pipeline(commands, int(request["inflight_max"]))
        outcome["unhealthy"] = unhealthy_partitions(self._records())
        return outcome

    def _compact(self) -> dict[str, Any]:
        before = self.quorum.status().snapshots_written
        started = time.perf_counter()
        self.quorum.force_snapshot()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while self.quorum.status().snapshots_written == before:
            if time.monotonic() > deadline:
                raise BenchError(f"no snapshot written within {REPLY_TIMEOUT_S} s")
            time.sleep(0.005)
        path = os.path.join(self.quorum.config.data_dir, SNAPSHOT_FILE_NAME)
        return {"elapsed_s": time.perf_counter() - started, "file_bytes": os.path.getsize(path)}

    # ---- failover ---------------------------------------------------------------------------

    def _start_probe(self, request: dict[str, Any]) -> None:
        for thread in self._threads:
            thread.join(REPLY_TIMEOUT_S)
            require(not thread.is_alive(), "a previous probe thread is still running")
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
        command = encode_command(AllocateProducerIds(self.node_id, 1))
        self.emit({"probe": probe_leadership(self.quorum, command, self._stop)})

    def _control(self, dead_broker: int, brokers: int, session_timeout_ms: int) -> None:
        report = self._loop.run_until_complete(
            self._controller_run(dead_broker, brokers, session_timeout_ms)
        )
        self.emit({"controller": report})

    async def _controller_run(
        self, dead_broker: int, brokers: int, session_timeout_ms: int
    ) -> dict[str, Any] | None:
        """The controller shell as the broker runs it, until the dead broker is fenced (or
        stopped / out of time): when it became active (this node leads, and its new core's
        first ``tick`` — one scan of every partition — returned), how long that tick took,
        and the fence's outcome. None if it never became active."""
        fence = _FenceWatch(self.quorum, self.store, FenceBroker(dead_broker, INCARNATION))
        controller = ActiveController(
            self.node_id,
            fence,
            self.store,
            ControllerConfig(
                session_timeout_ms=session_timeout_ms, leader_rebalance_interval_ms=None
            ),
            _now_ms,
            submit_timeout_s=_SUBMIT_TIMEOUT_S,
        )
        live = [b for b in range(1, brokers + 1) if b != dead_broker]
        report: dict[str, Any] = {"active_at": None, "fenced_at": None}
        self.store.apply_s_max = 0.0
        deadline = time.monotonic() + PROBE_DEADLINE_S + session_timeout_ms / 1000
        try:
            while fence.outcome is None and not self._stop.is_set():
                if time.monotonic() >= deadline:
                    break
                if not self.quorum.is_leader():
                    if controller.core is not None:
                        report["lost_leadership"] = True
                    await controller.tick()  # drops the core: a new term starts from nothing
                else:
                    with contextlib.suppress(ControllerError):  # leadership lost meanwhile
                        with self.store.read() as state:
                            version = state.version
                        for broker_id in live:
                            controller.heartbeat(broker_id, INCARNATION, version)
                        started = time.perf_counter()
                        await controller.tick()
                        tick_s = time.perf_counter() - started
                        if report["active_at"] is None and controller.core is not None:
                            report["active_at"] = time.monotonic()
                            report["first_decisions_ms"] = tick_s * 1000
                await asyncio.sleep(_CONTROLLER_TICK_S)
        finally:
            await controller.tasks.cancel_all()
        if fence.outcome is not None:
            report.update(fence.outcome)
        report["apply_ms_max"] = self.store.apply_s_max * 1000  # any apply, the fence's steps too
        report["fence_steps"] = fence.steps
        return report if report["active_at"] is not None else None

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)
        self.quorum.close()
        if not self._loop.is_running():  # else a controller thread outlived its join
            self._loop.close()


def child_main(spec: dict[str, Any]) -> int:
    voter = _Voter(spec)
    voter.emit({"ready": time.monotonic()})
    try:
        serve(voter.handlers(), voter.emit)
    finally:
        voter.close()
    return 0
