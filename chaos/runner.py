"""One chaos run, end to end: cluster up, workload + nemeses, heal, drain, check, report. What
the run is (its options, its fault plan) is run_config.py's ``RunConfig``.

The phases (Jepsen's: generator with faults, then the final generator)::

    starting    N brokers in network namespaces (``NetnsCluster``; with ``--client kafka``
                each also serves the Kafka protocol), the topic created
    running     producers + consumers record the history — through raftlog's gRPC client
                (workload.py) or a Kafka client (kafka_workload.py); the nemesis thread follows the
                seeded schedule (or the scripted scenario) until --time-limit
    healing     producers stop; every nemesis's final heal (network whole, every broker
                started, every broker resumed); wait until brokers are ready and ISRs full
    quiet       consumers keep polling for --quiet seconds, then stop
    draining    every partition read from 0 through its leader (drain ops)
    stopping    every broker stopped with SIGTERM; each replica's local log read (drain ops
                with node=<id>, see drain.py for what that means)
    checking    checker.check(history); results.json, timeline.png, the summary

Threads: the main thread runs the phases (and the live view refreshes itself from
``snapshot()``); each producer and consumer is a thread; the nemesis thread is the only one that
drives faults until the final heal, which the main thread does after joining it. Every wait is
bounded; ``NetnsCluster`` removes namespaces and brokers on any exit, Ctrl-C included.

Everything random derives from ``--seed``: the fault schedule (``schedule.Schedule``), the
nemeses' node choices (``schedule.nemesis_rng``) and each producer's partition choices, so a run
is replayed with its seed (timings, of course, differ).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from raftlog.client import Admin

from .anomalies import CheckResult
from .availability import availability
from .checker import check
from .drain import LeaderDrain, NodeLog, drain_leader, drain_node
from .history import Op
from .kafka_workload import (
    KafkaConsumerWorker,
    KafkaProducerWorker,
    kafka_client_available,
    kafka_client_versions,
)
from .lazyfs import fuse_unavailable
from .membership import AdminMembership
from .nemesis import Nemesis, NemesisContext, make_nemesis
from .netns import NetnsCluster
from .network import KAFKA_PORT, NetnsError, NetnsUnavailableError, check_available
from .report import (
    LiveSnapshot,
    acked_not_in_final_log,
    fault_counts,
    faults_json,
    render_live,
    render_report,
    run_figures,
    timeline_from_history,
    write_timeline_png,
)
from .run_config import RunConfig, default_out_dir, plan_faults
from .runs import cleanup_stale
from .scenario import (
    NO_FAULTS,
    FaultLog,
    NemesisThread,
    PartitionState,
    scenario_nemeses,
    schedule_names,
)
from .schedule import ScheduledFault, nemesis_rng
from .targets import Placement, StorageRisk
from .workload import (
    ConsumerWorker,
    ProducerStats,
    ProducerWorker,
    Recorder,
    ValueSource,
    key_of,
    partitions_of_worker,
)

__all__ = [
    "EXIT_ANOMALIES",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_UNAVAILABLE",
    "EXIT_VALID",
    "RunOutcome",
    "partition_states",
    "run",
]

logger = logging.getLogger(__name__)

EXIT_VALID = 0
EXIT_ANOMALIES = 1  # the checker found anomalies
EXIT_INCOMPLETE = 3  # no anomaly found, but the run could not read everything (see results)
EXIT_UNAVAILABLE = 4  # safe, but a recovery after a heal exceeded --max-recovery-s
EXIT_INTERRUPTED = 130

Producer = ProducerWorker | KafkaProducerWorker
Worker = ProducerWorker | ConsumerWorker | KafkaProducerWorker | KafkaConsumerWorker

READY_TIMEOUT_S = 90.0
ISR_FULL_TIMEOUT_S = 60.0
WORKER_JOIN_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What ``run`` returns: the verdict, where everything went, and the exit code."""

    exit_code: int
    out_dir: Path
    result: CheckResult | None
    results: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.result is not None and self.result.valid


# ---- cluster views -------------------------------------------------------------------------


def partition_states(cluster: NetnsCluster, topic: str) -> list[PartitionState]:
    """Each partition of ``topic`` from the answer with the highest partition epoch."""
    best: dict[int, tuple[int, PartitionState]] = {}
    for answer in cluster.metadata_answers([topic]).values():
        for t in answer.topics:
            if t.name != topic or t.error.code:
                continue
            for p in t.partitions:
                state = PartitionState(
                    p.partition, p.leader, p.leader_epoch, tuple(p.replicas), tuple(p.isr)
                )
                if p.partition not in best or p.partition_epoch > best[p.partition][0]:
                    best[p.partition] = (p.partition_epoch, state)
    return [state for _, (_, state) in sorted(best.items())]


def _node_states(cluster: NetnsCluster) -> tuple[tuple[int, str], ...]:
    out = []
    for node in cluster.node_ids:
        if cluster.is_paused(node):
            out.append((node, "paused"))
        elif cluster.is_running(node):
            out.append((node, "up"))
        else:
            out.append((node, "down"))
    return tuple(out)


def _wait_isr_full(
    cluster: NetnsCluster, topic: str, partitions: int, timeout_s: float
) -> str | None:
    """Until every partition has a leader and its whole replica set in sync; a note if not."""
    deadline = time.monotonic() + timeout_s
    last: list[PartitionState] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = partition_states(cluster, topic)
            if len(last) == partitions and all(
                p.leader >= 0 and set(p.isr) == set(p.replicas) for p in last
            ):
                return None
        time.sleep(0.5)
    shown = ", ".join(f"p{p.partition} leader {p.leader} isr {list(p.isr)}" for p in last)
    return f"ISRs not full {timeout_s:.0f} s after the final heal: {shown or 'no metadata'}"


# ---- the run -------------------------------------------------------------------------------


def run(config: RunConfig, console: Console | None = None) -> RunOutcome:
    """Run one chaos test; see the module docstring. Raises ``NetnsUnavailableError`` when the
    machine cannot run it (not root, no ``ip netns``) and ValueError for a bad plan."""
    console = console or Console()
    events = plan_faults(config)  # before anything is built: a bad plan fails fast
    check_available()
    if config.lazyfs and (reason := fuse_unavailable()) is not None:
        raise NetnsUnavailableError(f"--nemesis power-loss: {reason}")
    if config.client == "kafka" and (reason := kafka_client_available()) is not None:
        raise NetnsUnavailableError(reason)
    cleanup_stale(config.prefix)
    out = (config.out_dir or default_out_dir(config.seed)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "harness.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s: %(message)s"))
    root = logging.getLogger("raftlog")
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return _Run(config, console, events, out).execute()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


class _Run:
    """The state of one run while it executes; owned by the main thread (workers see only the
    recorder, the fault log and their stop events)."""

    def __init__(
        self, config: RunConfig, console: Console, events: list[ScheduledFault], out: Path
    ) -> None:
        self.config = config
        self.console = console
        self.events = events
        self.out = out
        self.notes: list[str] = []
        self.phase_name = "starting"
        self.faults = FaultLog()
        self.t0 = time.monotonic()  # the history's zero: reset when the workload starts
        self.live_view = config.live and console.is_terminal
        self.recorder = Recorder(self.clock_ms)
        self.cluster: NetnsCluster | None = None
        self.nemeses: dict[str, Nemesis] = {}
        self.storage_risk = StorageRisk()  # shared by the storage nemeses (the fault model)
        self.leader_drains: list[LeaderDrain] = []
        self.node_logs: list[NodeLog] = []
        self.stopped_cleanly: dict[int, bool] = {}
        self.restarted: list[str] = []
        self.interrupted = False
        self.harness_error: str | None = None
        self.started_wall = datetime.now(UTC)
        self.stop_producers = threading.Event()
        self.stop_consumers = threading.Event()
        self.stop_nemesis = threading.Event()
        self.producers: list[Producer] = []
        self.consumers: list[ConsumerWorker | KafkaConsumerWorker] = []
        self.nemesis_thread: NemesisThread | None = None

    def clock_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    # -- the phases --

    def execute(self) -> RunOutcome:
        config = self.config
        self.console.print(
            f"[bold]raftlog chaos[/bold]: {config.nodes} nodes (mutual TLS), client "
            f"{config.client}, nemesis "
            f"{','.join(config.nemeses)}, {config.time_limit_s:g} s, seed {config.seed}"
            f"{' [red](unsafe topic)[/red]' if config.unsafe else ''} → {self.out}"
        )
        with (self.out / "history.jsonl").open("w", encoding="utf-8") as history_file:
            self.recorder = Recorder(self.clock_ms, history_file)
            with NetnsCluster(
                config.nodes,
                run_dir=self.out / "cluster",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                replica_lag_ms_max=config.replica_lag_ms_max,
                replica_silence_ms_max=config.replica_silence_ms_max,
                prefix=config.prefix,
                lazyfs=config.lazyfs,
                kafka=config.client == "kafka",
                testing=(
                    {"drop_produce_responses": config.drop_produce_responses}
                    if config.drop_produce_responses
                    else None
                ),
            ) as cluster:
                self.cluster = cluster
                live: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
                if self.live_view:
                    live = Live(
                        get_renderable=lambda: render_live(self.snapshot()),
                        console=self.console,
                        refresh_per_second=4,
                    )
                with live:
                    try:
                        self._start(cluster)
                        self._workload(cluster)
                        self._heal(cluster)
                        self._drain(cluster)
                    except KeyboardInterrupt:
                        self.interrupted = True
                        self.notes.append("interrupted: no final drain, the history is partial")
                    except Exception as exc:  # the harness failed: keep what was recorded
                        logger.exception("the run stopped in phase %s", self.phase_name)
                        self.harness_error = f"in phase {self.phase_name}: {exc!r}"
                        self.notes.append(f"harness error {self.harness_error}")
                    finally:
                        self._stop_workers()
            self.recorder.flush()
        return self._finish()

    def _phase(self, name: str) -> None:
        self.phase_name = name
        logger.info("phase: %s", name)
        if not self.live_view:
            self.console.print(f"  [{self.now_s():6.1f} s] {name}")

    def _start(self, cluster: NetnsCluster) -> None:
        config = self.config
        self._phase("starting")
        cluster.wait_ready(READY_TIMEOUT_S)
        with Admin(cluster.bootstrap, timeout_s=30.0, security=cluster.security) as admin:
            admin.create_topic(
                config.topic,
                config.partitions,
                config.replication_factor,
                configs=config.topic_configs,
            )
        note = _wait_isr_full(cluster, config.topic, config.partitions, 30.0)
        if note:
            self.notes.append(f"before the workload: {note}")

    def _workload(self, cluster: NetnsCluster) -> None:
        config = self.config
        self._workers(cluster, ValueSource())
        self.nemeses = self._make_nemeses(cluster)
        self.nemesis_thread = NemesisThread(
            cluster,
            self.nemeses,
            self.events,
            nemesis_rng(config.seed),
            self._context(cluster),
            self.faults,
            self.stop_nemesis,
        )
        self.t0 = time.monotonic()
        self._phase("running")
        for worker in (*self.consumers, *self.producers):
            worker.start()
        self.nemesis_thread.start()
        next_line_s = 10.0
        while self.now_s() < config.time_limit_s:
            time.sleep(0.25)
            if not self.live_view and self.now_s() >= next_line_s:
                s = self.snapshot()
                self.console.print(
                    f"  [{s.elapsed_s:6.1f} s] acked {s.sends_ok} · fail {s.sends_fail} · "
                    f"info {s.sends_info} · {s.sends_per_s:.0f} ops/s · faults "
                    f"{', '.join(f.name for f in s.active_faults) or '-'}"
                )
                next_line_s += 10.0
        self.stop_producers.set()
        self.stop_nemesis.set()
        for producer in self.producers:
            producer.join(WORKER_JOIN_TIMEOUT_S)
        self.nemesis_thread.join(WORKER_JOIN_TIMEOUT_S + 30)

    def _workers(self, cluster: NetnsCluster, values: ValueSource) -> None:
        """The consumer and producer workers: the same processes, seeds and partitions through
        our gRPC client, or through confluent-kafka and the brokers' Kafka listeners
        (kafka_workload.py)."""
        config = self.config
        kafka = config.client == "kafka"
        consumer_type = KafkaConsumerWorker if kafka else ConsumerWorker
        producer_type = KafkaProducerWorker if kafka else ProducerWorker
        bootstrap = cluster.kafka_bootstrap if kafka else cluster.bootstrap
        mode: dict[str, Any] = {} if kafka else {"mode": config.producer_mode}
        self.consumers = [
            consumer_type(
                config.producers + i,
                self.recorder,
                bootstrap,
                config.topic,
                config.partitions,
                self.stop_consumers,
                security=cluster.security,
            )
            for i in range(config.consumers)
        ]
        self.producers = [
            producer_type(
                i,
                self.recorder,
                bootstrap,
                config.topic,
                config.partitions,
                values,
                config.rate_per_s / config.producers,
                self.stop_producers,
                random.Random(f"raftlog-chaos-producer-{config.seed}-{i}"),
                security=cluster.security,
                request_timeout_ms=config.request_timeout_ms,
                delivery_timeout_ms=config.delivery_timeout_ms,
                own=partitions_of_worker(i, config.producers, config.partitions),
                **mode,
            )
            for i in range(config.producers)
        ]

    def _heal(self, cluster: NetnsCluster) -> None:
        """Every nemesis's final heal, any broker that died on its own started again, then
        wait for readiness and full ISRs, then the quiet period (consumers still polling)."""
        self._phase("healing")
        context = self._context(cluster)
        for name, nemesis in self.nemeses.items():
            try:
                record = nemesis.final_heal(cluster, context)
            except Exception as exc:
                self.faults.error(f"final heal of {name}: {exc}")
                continue
            if record is not None:
                self.faults.stopped(record)
        with contextlib.suppress(NetnsError):
            cluster.heal()
        for node in cluster.node_ids:
            if cluster.is_paused(node):
                cluster.resume(node)
            if not cluster.is_running(node):
                # no nemesis of this run stopped it: the broker exited by itself
                self.restarted.append(f"node {node} had exited; log tail:\n{cluster.logs(node)}")
                cluster.start(node)
        self.faults.close_all(self.now_s())
        try:
            cluster.wait_ready(READY_TIMEOUT_S)
        except NetnsError as exc:
            self.notes.append(f"after the final heal: {exc}")
        note = _wait_isr_full(
            cluster, self.config.topic, self.config.partitions, ISR_FULL_TIMEOUT_S
        )
        if note:
            self.notes.append(note)
        self._phase("quiet")
        time.sleep(self.config.quiet_s)
        self.stop_consumers.set()
        for consumer in self.consumers:
            consumer.join(WORKER_JOIN_TIMEOUT_S)

    def _drain(self, cluster: NetnsCluster) -> None:
        config = self.config
        self._phase("draining")
        drain_process = config.producers + config.consumers
        for p in range(config.partitions):
            self.leader_drains.append(
                drain_leader(
                    self.recorder,
                    drain_process,
                    cluster.bootstrap,
                    config.topic,
                    p,
                    security=cluster.security,
                    timeout_s=config.drain_timeout_s,
                )
            )
        self._phase("stopping")
        for node in cluster.node_ids:
            running = cluster.is_running(node)
            self.stopped_cleanly[node] = cluster.stop(node) if running else False
        for node in cluster.node_ids:
            for p in range(config.partitions):
                found = drain_node(
                    self.recorder,
                    drain_process + 1,
                    cluster.data_dir(node),
                    node,
                    config.topic,
                    p,
                )
                if found is not None:
                    self.node_logs.append(found)

    def _stop_workers(self) -> None:
        """Whatever happened, no worker outlives the cluster (each wait bounded)."""
        for event in (self.stop_producers, self.stop_nemesis, self.stop_consumers):
            event.set()
        for thread in (*self.producers, *self.consumers):
            if thread.is_alive():
                thread.join(WORKER_JOIN_TIMEOUT_S)
        if self.nemesis_thread is not None and self.nemesis_thread.is_alive():
            self.nemesis_thread.join(WORKER_JOIN_TIMEOUT_S + 30)
        workers: list[Worker] = [*self.producers, *self.consumers]
        for worker in workers:
            if worker.crash is not None:
                self.notes.append(f"{worker.name} crashed: {worker.crash!r}")
            if worker.is_alive():
                self.notes.append(f"{worker.name} did not stop in time")

    # -- helpers --

    def _context(self, cluster: NetnsCluster) -> NemesisContext:
        topic = self.config.topic
        return NemesisContext(
            now_s=self.now_s,
            leaders=lambda: cluster.leaders([topic]),
            controller=cluster.controller,
            placement=lambda: self._placement(cluster),
            storage_risk=self.storage_risk,
            membership=AdminMembership(cluster.bootstrap, cluster.security, topic),
        )

    def _placement(self, cluster: NetnsCluster) -> Placement:
        """(replicas, ISR) of every partition of the workload's topic, or None when any is
        unknown (the storage nemeses then hold back: see ``StorageRisk``)."""
        try:
            states = partition_states(cluster, self.config.topic)
        except Exception:  # a partitioned or restarting cluster: unknown
            return None
        if len(states) != self.config.partitions:
            return None
        return [(s.replicas, s.isr) for s in states]

    def _make_nemeses(self, cluster: NetnsCluster) -> dict[str, Nemesis]:
        if self.config.scenario:
            topic = self.config.topic
            return dict(scenario_nemeses(lambda: partition_states(cluster, topic)))
        names = {e.nemesis for e in self.events}
        names |= set(schedule_names(self.config.nemeses, self.config.nodes))
        return {name: make_nemesis(name) for name in sorted(names) if name != NO_FAULTS}

    def snapshot(self) -> LiveSnapshot:
        counters, errors = self.recorder.snapshot_counters()
        cluster = self.cluster
        return LiveSnapshot(
            elapsed_s=self.now_s() if self.phase_name != "starting" else 0.0,
            time_limit_s=self.config.time_limit_s,
            phase=self.phase_name,
            sends_ok=counters.sends_ok,
            sends_fail=counters.sends_fail,
            sends_info=counters.sends_info,
            sends_per_s=self.recorder.sends_per_s(),
            polls_ok=counters.polls_ok,
            records_read=counters.records_read,
            truncations=counters.truncations,
            errors=tuple(errors),
            active_faults=self.faults.active,
            faults_done=len(self.faults.done),
            nodes=_node_states(cluster) if cluster is not None else (),
            seed=self.config.seed,
        )

    # -- the verdict --

    def _finish(self) -> RunOutcome:
        self.phase_name = "checking"
        ops = self.recorder.ops
        result = check(ops)
        avail = availability(
            ops,
            [(f.name, f.start_s, f.stop_s) for f in self.faults.done],
            [key_of(self.config.topic, p) for p in range(self.config.partitions)],
            self.config.time_limit_s,
        )
        limit = self.config.max_recovery_s
        too_slow = limit is not None and (
            avail.worst_recovery_s is None or avail.worst_recovery_s > limit
        )
        complete = (
            not self.interrupted
            and self.harness_error is None
            and len(self.leader_drains) == self.config.partitions
            and all(d.ok for d in self.leader_drains)
            and all(log_.error is None for log_ in self.node_logs)
        )
        if not result.valid:
            exit_code = EXIT_ANOMALIES
        elif self.interrupted:
            exit_code = EXIT_INTERRUPTED
        elif not complete:
            exit_code = EXIT_INCOMPLETE
        elif too_slow:
            exit_code = EXIT_UNAVAILABLE
        else:
            exit_code = EXIT_VALID
        timeline_note = write_timeline_png(
            timeline_from_history(ops),
            self.faults.done,
            self.out / "timeline.png",
            title=(
                f"raftlog chaos · {self.config.nodes} nodes · client {self.config.client} · "
                f"{','.join(self.config.nemeses)}"
                f" · seed {self.config.seed}{' · UNSAFE topic' if self.config.unsafe else ''}"
            ),
            end_s=self.config.time_limit_s,
            marks=avail.stretches(),
        )
        if timeline_note:
            self.notes.append(timeline_note)
        for node_log in self.node_logs:
            if node_log.tail_bytes_cut:
                self.notes.append(
                    f"node {node_log.node} {node_log.key}: opening the log after a clean stop "
                    f"cut {node_log.tail_bytes_cut} bytes of torn or corrupt tail"
                )
            if node_log.error:
                self.notes.append(f"node {node_log.node} {node_log.key}: {node_log.error}")
        library_log = self._client_json().get("library_log", {})
        if library_log.get("PROTOERR"):
            self.notes.append(
                f"the Kafka client could not parse {library_log['PROTOERR']} broker answer(s) "
                "(librdkafka PROTOERR; the first lines are in harness.log)"
            )
        truncations = run_figures(ops)["consumer_truncations"]
        if truncations:
            self.notes.append(
                f"consumers were told {truncations} time(s) that the log was truncated below "
                "their position (KIP-320): records they had read were removed"
            )
        results = self._results(ops, result, complete, exit_code, timeline_note is None)
        results["availability"] = avail.to_json()
        (self.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        self.console.print(render_report(result, results))
        return RunOutcome(exit_code, self.out, result, results, tuple(self.notes))

    def _producer_figures(self) -> dict[str, Any]:
        """The producers' retries (workload.ProducerStats), summed over the workers."""
        total = ProducerStats()
        for worker in self.producers:
            total.add(worker.stats)
        return {
            "mode": self.config.producer_label,
            "attempts": total.attempts,
            "retried_ops": total.retried_ops,
            "dedupe_acks": total.dedupe_acks,
            "producer_ids": total.producer_ids,
        }

    def _client_json(self) -> dict[str, Any]:
        """How the workload reached the brokers (the report's ``client`` line)."""
        if self.config.client != "kafka":
            return {"name": "grpc", "library": "raftlog.client", "producer": "chaos workload"}
        consumer_errors: dict[str, int] = {}
        library_log: dict[str, int] = {}
        for worker in (*self.producers, *self.consumers):
            if isinstance(worker, KafkaConsumerWorker):
                for name, count in worker.event_errors.items():
                    consumer_errors[name] = consumer_errors.get(name, 0) + count
            if isinstance(worker, KafkaConsumerWorker | KafkaProducerWorker):
                for facility, count in worker.library_log.counts.items():
                    library_log[facility] = library_log.get(facility, 0) + count
        return {
            "name": "kafka",
            "library": kafka_client_versions(),
            "producer": self.config.producer_label,
            "listener_port": KAFKA_PORT,
            "consumer_error_events": consumer_errors,
            # librdkafka's warnings and errors by facility (PROTOERR: answers it could not
            # parse, FAIL: connections lost or refused); the first lines are in harness.log
            "library_log": dict(sorted(library_log.items(), key=lambda kv: -kv[1])),
        }

    def _results(
        self,
        ops: Sequence[Op],
        result: CheckResult,
        complete: bool,
        exit_code: int,
        timeline_written: bool,
    ) -> dict[str, Any]:
        drained_end = {d.key: d.end_offset for d in self.leader_drains}
        nodes: dict[str, dict[str, Any]] = {}
        for node_log in self.node_logs:
            nodes.setdefault(str(node_log.node), {})[node_log.key] = {
                "log_start_offset": node_log.log_start_offset,
                "log_end_offset": node_log.log_end_offset,
                "high_watermark": node_log.high_watermark,
                "records": len(node_log.records),
                "leader_drain_end": drained_end.get(node_log.key),
                "tail_bytes_cut": node_log.tail_bytes_cut,
                "error": node_log.error,
            }
        return {
            "valid": result.valid,
            "complete": complete,
            "interrupted": self.interrupted,
            "exit_code": exit_code,
            "out_dir": str(self.out),
            "bad": [kind.value for kind in result.bad_kinds],
            "started_at": self.started_wall.isoformat(timespec="seconds"),
            "wall_s": round((datetime.now(UTC) - self.started_wall).total_seconds(), 1),
            "config": self.config.to_json(),
            "security": "tls",  # mutual TLS everywhere; the run's CA is in cluster/tls
            "client": self._client_json(),
            "workload": {**run_figures(ops), "producer": self._producer_figures()},
            "faults": {
                "injected": len(self.faults.done),
                "by_kind": dict(fault_counts(self.faults.done)),
                "planned": [e._asdict() for e in self.events],
                "records": faults_json(self.faults.done),
                "errors": list(self.faults.errors),
                # storage faults held back because they would have left the fault model
                "skipped_outside_model": self.storage_risk.skipped,
            },
            "acked_not_in_final_log": acked_not_in_final_log(ops),
            "drain": {
                "leader": {
                    d.key: {
                        "ok": d.ok,
                        "end_offset": d.end_offset,
                        "records": d.records,
                        "attempts": d.attempts,
                        "error": d.error,
                    }
                    for d in self.leader_drains
                },
                "nodes": nodes,
                "stopped_cleanly": {str(n): ok for n, ok in self.stopped_cleanly.items()},
            },
            "brokers_exited_on_their_own": self.restarted,
            "checker": result.to_json(),
            "notes": list(self.notes),
            "files": {
                "history": "history.jsonl",
                "timeline": "timeline.png" if timeline_written else None,
                "cluster": "cluster/",
                "harness_log": "harness.log",
            },
        }
