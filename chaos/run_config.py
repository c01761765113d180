"""What defines a chaos run (``RunConfig``: the ``raftlog chaos run`` options, the command line
that replays it) and the faults it will inject (``plan_faults``). Pure: no cluster, no clock.

The run's folder defaults to ``.raftlog-chaos/<yyyymmdd-HHMMSS>-seed<n>`` (``default_out_dir``);
what goes into it is runner.py's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .scenario import UNCLEAN_SCENARIO, schedule_names, unclean_script
from .schedule import Schedule, ScheduledFault
from .workload import PRODUCER_MODES

__all__ = ["CLIENTS", "RunConfig", "default_out_dir", "plan_faults"]

# How the workload reaches the brokers: raftlog's own gRPC client (workload.py), or a Kafka
# client (confluent-kafka, kafka_workload.py) through every broker's Kafka listener.
CLIENTS: tuple[str, ...] = ("grpc", "kafka")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that defines a run (``raftlog chaos run`` options)."""

    nodes: int = 3
    nemeses: tuple[str, ...] = ("partition", "kill", "pause")
    time_limit_s: float = 60.0
    rate_per_s: float = 100.0
    seed: int = 0
    out_dir: Path | None = None
    unsafe: bool = False
    partitions: int = 3
    producers: int = 4
    consumers: int = 2
    quiet_s: float = 5.0
    fault_interval_s: tuple[float, float] = (5.0, 10.0)
    fault_duration_s: tuple[float, float] = (5.0, 15.0)
    replica_lag_ms_max: int = 5000
    replica_silence_ms_max: int = 1000
    session_timeout_ms: int = 1500
    heartbeat_interval_ms: int = 150
    request_timeout_ms: int = 2000
    drain_timeout_s: float = 60.0
    topic: str = "chaos"
    prefix: str = "rl"  # namespace / interface prefix (tests use their own)
    live: bool = True
    producer_mode: str = "once"  # once | idempotent | retry (workload.py's module docstring)
    client: str = "grpc"  # grpc | kafka (CLIENTS)
    delivery_timeout_ms: int = 10_000  # retrying modes: how long one op keeps retrying
    drop_produce_responses: float = 0.0  # brokers drop this share of Produce answers (testing)
    # fail the run (EXIT_UNAVAILABLE) when a partition takes longer than this to acknowledge again
    # after a heal, or never does in its window; None: availability is measured, not judged
    max_recovery_s: float | None = None

    def __post_init__(self) -> None:
        if self.nodes not in (3, 5):
            raise ValueError(f"--nodes is 3 or 5, not {self.nodes}")
        if self.time_limit_s <= 0 or self.rate_per_s <= 0:
            raise ValueError("--time-limit and --rate must be positive")
        if not 1 <= self.partitions <= 64 or not 1 <= self.producers <= 64:
            raise ValueError("--partitions and --producers must be in [1, 64]")
        if not 0 <= self.consumers <= 16:
            raise ValueError("--consumers must be in [0, 16]")
        if self.producer_mode not in PRODUCER_MODES:
            raise ValueError(f"--producer is one of {', '.join(PRODUCER_MODES)}")
        if not 0.0 <= self.drop_produce_responses < 1.0:
            raise ValueError("--drop-produce-responses must be in [0, 1)")
        if self.client not in CLIENTS:
            raise ValueError(f"--client is one of {', '.join(CLIENTS)}")
        if self.client == "kafka" and self.producer_mode != "once":
            raise ValueError(
                "--producer is the gRPC client's; with --client kafka every send goes through "
                "librdkafka's idempotent producer"
            )

    @property
    def scenario(self) -> bool:
        return UNCLEAN_SCENARIO in self.nemeses

    @property
    def lazyfs(self) -> bool:
        """Data dirs on lazyfs mounts: needed when a power loss may be scheduled."""
        return not self.scenario and "power-loss" in schedule_names(self.nemeses, self.nodes)

    @property
    def producer_label(self) -> str:
        """What sends: the gRPC workload's mode, or the Kafka client's producer."""
        return "librdkafka-idempotent" if self.client == "kafka" else self.producer_mode

    @property
    def replication_factor(self) -> int:
        # the scenario needs a broker outside the target's replicas (module doc of scenario.py)
        return min(3, self.nodes - 1) if self.scenario else min(3, self.nodes)

    @property
    def min_insync_replicas(self) -> int:
        return 1 if self.unsafe else min(2, self.replication_factor)

    @property
    def topic_configs(self) -> dict[str, str]:
        return {
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": "true" if self.unsafe else "false",
        }

    def command_line(self) -> str:
        """The command that replays this run (same seed, same schedule)."""
        args = [
            "raftlog",
            "chaos",
            "run",
            "--nodes",
            str(self.nodes),
            "--nemesis",
            ",".join(self.nemeses),
            "--time-limit",
            f"{self.time_limit_s:g}",
            "--rate",
            f"{self.rate_per_s:g}",
            "--seed",
            str(self.seed),
            "--partitions",
            str(self.partitions),
            "--producers",
            str(self.producers),
            "--consumers",
            str(self.consumers),
            "--quiet",
            f"{self.quiet_s:g}",
            "--fault-interval",
            f"{self.fault_interval_s[0]:g},{self.fault_interval_s[1]:g}",
            "--fault-duration",
            f"{self.fault_duration_s[0]:g},{self.fault_duration_s[1]:g}",
        ]
        if self.unsafe:
            args.append("--unsafe")
        if self.client != "grpc":
            args += ["--client", self.client]
        if self.producer_mode != "once":
            args += ["--producer", self.producer_mode]
        if self.drop_produce_responses:
            args += ["--drop-produce-responses", f"{self.drop_produce_responses:g}"]
        if self.max_recovery_s is not None:
            args += ["--max-recovery-s", f"{self.max_recovery_s:g}"]
        return shlex.join(args)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "nemeses": list(self.nemeses),
            "time_limit_s": self.time_limit_s,
            "rate_per_s": self.rate_per_s,
            "seed": self.seed,
            "unsafe": self.unsafe,
            "topic": self.topic,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "topic_configs": self.topic_configs,
            "producers": self.producers,
            "consumers": self.consumers,
            "quiet_s": self.quiet_s,
            "fault_interval_s": list(self.fault_interval_s),
            "fault_duration_s": list(self.fault_duration_s),
            "replica_lag_ms_max": self.replica_lag_ms_max,
            "replica_silence_ms_max": self.replica_silence_ms_max,
            "session_timeout_ms": self.session_timeout_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "producer_mode": self.producer_mode,
            "client": self.client,
            "lazyfs": self.lazyfs,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "drop_produce_responses": self.drop_produce_responses,
            "max_recovery_s": self.max_recovery_s,
            "command": self.command_line(),
        }


def default_out_dir(seed: int, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(".raftlog-chaos") / f"{stamp}-seed{seed}"


def plan_faults(config: RunConfig) -> list[ScheduledFault]:
    """The run's fault timeline (pure): the scripted scenario, nothing, or the seeded schedule.
    Raises ValueError when the time limit cannot hold the scenario."""
    if config.scenario:
        return unclean_script(
            replica_lag_ms_max=config.replica_lag_ms_max,
            session_timeout_ms=config.session_timeout_ms,
            time_limit_s=config.time_limit_s,
        )
    names = schedule_names(config.nemeses, config.nodes)
    if not names:
        return []
    return Schedule(
        config.seed,
        names,
        interval_s=config.fault_interval_s,
        duration_s=config.fault_duration_s,
        time_limit_s=config.time_limit_s,
    ).events()
