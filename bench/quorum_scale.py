"""Scale of the metadata quorum (issues 3 and 20): 100,000 partitions in the state machine and
through a real 3-voter quorum. Run by ``make bench-quorum-scale``::

    python -m bench.quorum_scale [--partitions 100000] [--small-topics 10000]
        [--alters 100000] [--quorum-partitions 100000] [--quorum-alters 20000]
        [--inflight-max 1000] [--runs 5] [--session-timeout-ms 2000]
        [--skip-inproc] [--skip-quorum] [--out bench-results/quorum.json]

ZooKeeper-era Kafka topped out around ten thousand topics; this measures how far one Raft
metadata log goes. A benchmark, not a test: it prints a table and merges its figures into
``--out`` (keys it does not write, e.g. ``quorum_failover``'s, are kept). A wrong result (a command
refused that should have applied, a snapshot that does not round-trip, a node that never catches
up, a child that misbehaves) prints what was measured so far, writes nothing and exits 1.
Commands lost to an election (a Raft-thread stall longer than the election timeout) are a
finding, not an error: they are counted, listed as warnings and written (``--strict``: exit 1).

In one process — the pure state machine behind ``MetadataStore.apply`` (bytes in, bytes out, as
the Raft thread calls it); ``time.perf_counter``:

* **create** — ``--brokers`` registered, unfenced brokers; ``--partitions`` partitions as
  CreateTopic commands ("batches") of ``--partitions-per-topic`` each, RF
  ``--replication-factor``. Each command is prepared as ``ActiveController.create_topic`` does,
  less its limit checks (per-broker replica cap, config validation): ``leader_counts()`` +
  ``assign_replicas`` + ``encode_command`` (``create_prep_s_*``); then
  applied (decode + apply + result encode: ``create_*_partitions_s``, per batch and in total).
  Then the same number of partitions as ``--small-topics`` topics of
  ``--small-topic-partitions`` (Kafka's "how many topics" question), into a fresh state:
  ``leader_counts()`` scans every partition for each topic, so preparing is quadratic in topics.
* **snapshot** — ``MetadataState.snapshot()`` at that size: bytes, take time, and the time of
  ``MetadataState.from_snapshot`` (best of ``--repeat``); the loaded state must equal the original.
* **alter** — ``--alters`` AlterPartition commands, encoded before the clock starts: a first pass
  shrinks the ISR of each of ``alters / 2`` partitions by its last follower, a second pass
  expands it back, each naming the partition epoch it will find. Every one must apply cleanly.

Through a real quorum — ``--voters`` child processes (this module with ``--child``: one voter
each, ``quorum_scale_voter``), each a ``RaftQuorum`` with the default timers over a
``MetadataStore`` on 127.0.0.1, as ``quorum_failover``; ``time.monotonic`` (system-wide on
Linux) across processes:

* **load** — ``--quorum-partitions`` partitions as CreateTopic commands prepared as above and
  submitted one at a time to the leader (``submit``: committed and applied there).
* **commit rate** — ``--quorum-alters`` AlterPartition commands through ``submit_async``, at most
  ``--inflight-max`` unanswered; rate = commands / (last callback - first submit). Log
  compactions (every ``log_compaction_min_entries`` = 5000 entries) fall inside the window, as
  they would in production; reported with it: the longest snapshot *capture* (what a compaction
  costs the Raft thread; the writer thread encodes and writes), the longest apply, the longest
  gap between two Raft-thread ticks on the leader, and the elections (term changes).
* **elections without a kill** — term changes from the first leader to the end of the catch-up
  (load, commit, healing, compactions, a snapshot install): with nobody killed, each one is a
  Raft thread stalled past the election timeout (target 0); ``raft_tick_gap_ms_max`` is the
  longest such stall on the voters that installed no snapshot.
* **catch-up** — a follower is SIGKILLed, its data directory deleted, the leader forced to
  compact, and the follower restarted empty: time from spawning its process until it has applied
  the leader's version (a snapshot install plus a short log tail; interpreter start included).
* **failover** — ``--runs`` times: kill -9 the Raft leader after ``--stable-s`` idle. Voter i
  co-hosts broker i, so that broker dies with it; the survivors heartbeat for every other
  broker. Three instants on the survivor that takes over, each minus the instant before
  ``kill``: ``failover_ms`` — its first commit (an AllocateProducerIds probe), the raw Raft
  figure; the controller is the broker's own shell (``ActiveController``, ticked every 10 ms);
  ``controller_active_ms`` — ``is_leader()`` held and the first ``tick`` of its new
  ``ControllerCore`` returned (its ``decisions()``: one scan over every partition);
  ``broker_fenced_ms`` — the FenceBroker of the dead broker committed (stamped on the Raft
  thread right after its apply): a broker with more than 1000 partitions is fenced in steps
  (``fence_steps``: chunks of 1000 partitions, then the FenceBroker), each applied alone
  (``fence_apply_ms_max``: the longest apply meanwhile). The last includes
  ``--session-timeout-ms``: a new controller gives every broker one full session before it
  fences it (raft/controller.py), so broker fencing follows Raft failover by at least a
  session timeout. Between runs the killed node restarts from its data directory and the
  leader heals the metadata (unfence, expand ISRs, preferred elections), so every run starts
  from the same shape. A run in which leadership moves again before the fence is void, repeated
  (at most ``--runs`` extra) and counted; ``failover_elections_beyond_kills`` counts term changes
  beyond one per kill over the failover runs and their healing (target 0).

Every wait is bounded; every child is killed by PID on the way out and the temporary directory
removed, also on failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from raftlog.raft.commands import encode_command
from raftlog.raft.metadata import MetadataState
from raftlog.raft.store import MetadataStore

from .common import (
    PROBE_DEADLINE_S,
    BenchError,
    Child,
    FigureReport,
    agreed_leader,
    bench_shell,
    figure_table,
    first_commit,
    free_port,
    merge_json,
    require,
)
from .quorum_scale_commands import (
    alter_commands,
    broker_commands,
    count_label,
    create_topic_command,
    refusal,
    topic_name,
)
from .quorum_scale_voter import PHASE_TIMEOUT_S, child_main

__all__ = ["main", "render"]

_MODULE = "bench.quorum_scale"
_LEADER_TIMEOUT_S = 15.0
_CONVERGE_TIMEOUT_S = 60.0
_CATCH_UP_TIMEOUT_S = 120.0
_HEAL_ROUNDS = 5


# ---- the report (pure) --------------------------------------------------------------------


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


def render(report: FigureReport) -> Table:
    """The figures as a table, in the order they were measured. Pure: no IO."""
    meta = report.meta
    return figure_table(
        "raftlog metadata quorum at scale",
        f"in-process: {meta.get('brokers', '?')} brokers, RF "
        f"{meta.get('replication_factor', '?')}, "
        f"{meta.get('partitions_per_topic', '?')} partitions per CreateTopic\n"
        f"quorum: {meta.get('voters', '?')} voters on 127.0.0.1, "
        f"{meta.get('quorum_partitions', '?')} partitions, "
        f"session timeout {meta.get('session_timeout_ms', '?')} ms "
        "(included in broker_fenced_ms)\n"
        f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}",
        report.figures,
        report.figures,
        _format,
    )


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
        require(refusal(result) is None, f"CreateTopic refused: {result!r}")
    return created


def _registered_store(brokers: int) -> MetadataStore:
    store = MetadataStore()
    for command in broker_commands(brokers):
        require(refusal(store.apply(encode_command(command))) is None, "register")
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
            require(
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
    refused = sum(1 for result in results if refusal(result) is not None)
    require(refused == 0, f"{refused} AlterPartition commands were refused")
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


# ---- parent ---------------------------------------------------------------------------------


def _converge(children: list[Child], timeout_s: float = _CONVERGE_TIMEOUT_S) -> int:
    """Wait until every voter applied the same version; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        versions = {int(child.call("status")["version"]) for child in children}
        if len(versions) == 1:
            return versions.pop()
        time.sleep(0.05)
    raise BenchError(f"the voters did not converge within {timeout_s:.0f} s")


def _heal(
    children: list[Child], args: argparse.Namespace, warnings: list[str], *, required: bool = True
) -> bool:
    """Bring the metadata back to its created shape (not measured). An election can cut a round
    short; the next round runs on whichever node leads then, at most ``_HEAL_ROUNDS`` rounds.
    Not healthy after them: BenchError when ``required``, else a warning and False."""
    for _ in range(_HEAL_ROUNDS):
        _converge(children)
        outcome = agreed_leader(children, _LEADER_TIMEOUT_S).call(
            "heal", PHASE_TIMEOUT_S, inflight_max=args.inflight_max
        )
        if outcome["unhealthy"] == 0 and outcome["count"] == outcome["ok"]:
            return True
        if outcome["elections"]:
            warnings.append(
                f"healing: {outcome['failed']} of {outcome['count']} commands lost to "
                f"{outcome['elections']} election(s) (longest snapshot "
                f"{outcome['snapshot_ms_max']:.0f} ms)"
            )
    if required:
        raise BenchError(f"the metadata is not healthy after {_HEAL_ROUNDS} rounds")
    warnings.append(
        f"the metadata is not healthy after {_HEAL_ROUNDS} healing rounds: the failover runs "
        "stop here (the next ones would not start from the created shape)"
    )
    return False


def _failover_run(
    children: list[Child], args: argparse.Namespace, warnings: list[str], console: Console
) -> dict[str, Any] | None:
    """One kill -9 of the leader; None if the run is void (leadership moved again before the
    dead broker was fenced: an election after the failover, which ``warnings`` records)."""
    leader = agreed_leader(children, _LEADER_TIMEOUT_S)
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
    winner, probes = first_commit(survivors)
    if winner is None:
        raise BenchError("no survivor committed after the leader was killed")
    control_timeout_s = PROBE_DEADLINE_S + args.session_timeout_ms / 1000 + 10.0
    for child in survivors:
        if child is not winner:
            child.expect("controller", control_timeout_s)
    control = winner.expect("controller", control_timeout_s)
    leader.spawn()
    leader.expect("ready")
    if control is None or control["fenced_at"] is None:
        warnings.append(
            f"failover run void: node {winner.node_id} took over after "
            f"{(probes[winner.node_id]['committed'] - killed_at) * 1000:.0f} ms but "
            + (
                "lost leadership before fencing the dead broker"
                if control is not None and control.get("lost_leadership")
                else "did not fence the dead broker in time"
            )
        )
        return None
    run = {
        "failover_ms": (probes[winner.node_id]["committed"] - killed_at) * 1000,
        "controller_active_ms": (control["active_at"] - killed_at) * 1000,
        "broker_fenced_ms": (control["fenced_at"] - killed_at) * 1000,
        "fence_apply_ms": control["apply_ms"],
        "fence_apply_ms_max": control["apply_ms_max"],
        "fence_steps": control["fence_steps"],
        "fence_changed_partitions": control["changed_partitions"],
        "first_decisions_ms": control["first_decisions_ms"],
    }
    console.print(
        f"failover: killed {leader.node_id}, {winner.node_id} committed after "
        f"{run['failover_ms']:.0f} ms, controller active {run['controller_active_ms']:.0f} ms, "
        f"broker fenced {run['broker_fenced_ms']:.0f} ms "
        f"({run['fence_steps']} steps, longest apply {run['fence_apply_ms_max']:.1f} ms)"
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
    # the keys of issue 3 were for 10k partitions; other sizes (100k since issue 20) say theirs
    size = "" if args.quorum_partitions == 10_000 else f"_{label}_partitions"
    voters = {str(i): f"127.0.0.1:{free_port()}" for i in range(1, args.voters + 1)}
    children = [
        Child(
            _MODULE,
            i,
            {"node_id": i, "voters": voters, "data_dir": str(_data_dir(workdir, i))},
            workdir / f"voter-{i}.log",
        )
        for i in range(1, args.voters + 1)
    ]
    try:
        for child in children:
            child.spawn()
        for child in children:
            child.expect("ready")
        leader = agreed_leader(children, _LEADER_TIMEOUT_S)
        first_term = int(leader.call("status")["term"])

        load = leader.call(
            "load",
            PHASE_TIMEOUT_S,
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
            "alter", PHASE_TIMEOUT_S, count=args.quorum_alters, inflight_max=args.inflight_max
        )
        stem = f"alter_partition_commit_{{}}_{args.voters}voters{size}"
        figures[stem.format("per_s")] = alter["ok"] / alter["elapsed_s"]
        figures[stem.format("compactions")] = alter["compactions"]
        figures[stem.format("snapshot_ms_max")] = alter["snapshot_ms_max"]
        figures[stem.format("elections")] = alter["elections"]
        figures[stem.format("failed")] = alter["failed"]
        figures[stem.format("apply_ms_max")] = alter["apply_ms_max"]
        figures[stem.format("tick_gap_ms_max")] = alter["tick_gap_ms_max"]
        console.print(
            f"commit: {alter['ok']:,} AlterPartition in {alter['elapsed_s']:.3f} s "
            f"({alter['compactions']} log compactions, longest snapshot "
            f"{alter['snapshot_ms_max']:.0f} ms, {alter['elections']} elections)"
        )
        require(alter["refused"] == 0, f"AlterPartition refused by the state machine: {alter}")
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
        shutil.rmtree(_data_dir(workdir, follower.node_id))
        follower.spawn(catch_up_version=version)
        follower.expect("ready")
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
        while (status := follower.call("status"))["caught_up_at"] is None:
            require(time.monotonic() < deadline, "the emptied follower did not catch up")
            time.sleep(0.01)
        require(status["partitions"] == args.quorum_partitions, f"caught up to {status}")
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
        # every election so far (load, commit, heal, compactions, catch-up) had no kill behind
        # it: a stalled Raft thread (a snapshot, a large command) is the only cause left
        terms = [int(c.call("status")["term"]) for c in children]
        figures[f"elections_without_kill_{label}_partitions"] = max(terms) - first_term
        figures[f"raft_tick_gap_ms_max_{label}_partitions"] = max(
            float(c.call("status")["tick_gap_ms_max"]) for c in children if c is not follower
        )
        failover_term = max(terms)

        runs: list[dict[str, Any]] = []
        attempts = 0
        while len(runs) < args.runs:
            attempts += 1  # void runs are repeated, within a bound
            require(attempts <= 2 * args.runs, f"{attempts - 1 - len(runs)} void failover runs")
            run = _failover_run(children, args, warnings, console)
            if run is not None:
                runs.append(run)
            if not _heal(children, args, warnings, required=False):
                break
        require(bool(runs), "no failover run could be measured")
        figures[f"failover_runs_void_{label}_partitions"] = attempts - len(runs)
        # one election per kill is the failover itself; any more is spurious
        end_term = max(int(c.call("status")["term"]) for c in children)
        figures[f"failover_elections_beyond_kills_{label}_partitions"] = (
            end_term - failover_term - attempts
        )
        for key in ("failover_ms", "controller_active_ms", "broker_fenced_ms"):
            samples = [run[key] for run in runs]
            figures[f"{key}_median_{label}_partitions"] = statistics.median(samples)
            figures[f"{key}_max_{label}_partitions"] = max(samples)
        figures[f"failover_ms_samples_{label}_partitions"] = [run["failover_ms"] for run in runs]
        figures[f"fence_apply_ms_median_{label}_partitions"] = statistics.median(
            run["fence_apply_ms"] for run in runs
        )
        figures[f"fence_apply_ms_max_{label}_partitions"] = max(
            run["fence_apply_ms_max"] for run in runs
        )
        figures[f"fence_steps_{label}_partitions"] = max(run["fence_steps"] for run in runs)
        figures[f"controller_first_decisions_ms_{label}_partitions"] = statistics.median(
            run["first_decisions_ms"] for run in runs
        )
    finally:
        for child in children:  # by PID, each one ours
            child.stop()


def _data_dir(workdir: Path, node_id: int) -> Path:
    return workdir / f"voter-{node_id}"


# ---- main -----------------------------------------------------------------------------------


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1) if abs(value) >= 100 else round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


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
    parser.add_argument("--quorum-partitions", type=int, default=100_000)
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
        return child_main(json.loads(args.child))
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
    with bench_shell(console, "interrupted; children killed, temporary files removed"):
        try:
            if not args.skip_inproc:
                _inproc(args, figures, console)
            if not args.skip_quorum:
                with tempfile.TemporaryDirectory(prefix="raftlog-scale-") as tmp:
                    _quorum(args, Path(tmp), figures, warnings, console)
        except BenchError:  # what was measured so far, and nothing written
            console.print(render(FigureReport({k: _round(v) for k, v in figures.items()}, meta)))
            for warning in warnings:
                console.print(f"[yellow]warning:[/yellow] {warning}")
            raise
    report = FigureReport({k: _round(v) for k, v in figures.items()}, meta)
    console.print(render(report))
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    merge_json(args.out, {**report.figures, "scale_meta": meta, "scale_warnings": warnings})
    console.print(f"merged into {args.out}")
    return 1 if warnings and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
