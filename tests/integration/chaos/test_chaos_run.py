"""Whole chaos runs against real brokers in network namespaces (needs root and ``ip netns``).

Seven runs, about five minutes together on 2 cores:

1. a short seeded run — 3 nodes, partitions and kills — must come out valid and complete;
2. the proof that the harness can fail: the scripted unclean-leader scenario against a topic with
   Kafka 0.8's settings (``unclean.leader.election.enable=true``, ``min.insync.replicas=1``)
   must report acknowledged writes lost;
3. the same script against safe settings (unclean off, min ISR 2) must report none;
4. idempotence: brokers drop 30% of Produce answers after appending, under partitions and
   kills; producers retry with a producer id and sequence — the checker must find no duplicate
   although many retries were answered DUPLICATE_SEQUENCE_NUMBER;
5. the same lost answers retried without a producer id must be reported as duplicates;
6. availability: 5 nodes under majorities rings and bridges; every partition must acknowledge
   again within 2 s of each heal (``--max-recovery-s 2``);
7. the Kafka client (``--client kafka``): a short run with partitions and kills through the
   brokers' Kafka listeners and confluent-kafka must come out valid and complete (about 40 s).

On failure each test prints the run folder and seed; ``raftlog chaos check <folder>`` re-checks
the history, and the replay command is in ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from raftlog.chaos.anomalies import Kind
from raftlog.chaos.history import load_jsonl
from raftlog.chaos.network import NetnsUnavailableError, check_available
from raftlog.chaos.run_config import RunConfig
from raftlog.chaos.runner import EXIT_ANOMALIES, EXIT_VALID, RunOutcome, run
from raftlog.chaos.scenario import UNCLEAN_SCENARIO

PREFIX = "rlc"  # never touches a real run's "rl" objects or test_netns's "rlt"


def _unavailable() -> str | None:
    try:
        check_available()
    except NetnsUnavailableError as exc:
        return str(exc)
    return None


UNAVAILABLE = _unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


def run_and_explain(config: RunConfig) -> RunOutcome:
    outcome = run(config, Console(width=120, force_terminal=False))
    print(f"run folder {outcome.out_dir}, seed {config.seed}: exit {outcome.exit_code}")
    return outcome


def test_a_short_seeded_run_with_partitions_and_kills_is_valid(tmp_path: Path) -> None:
    config = RunConfig(
        nodes=3,
        nemeses=("partition", "kill"),
        time_limit_s=45,
        rate_per_s=80,
        seed=20240601,
        out_dir=tmp_path / "run",
        fault_interval_s=(3.0, 5.0),
        fault_duration_s=(4.0, 8.0),
        prefix=PREFIX,
        live=False,
    )
    outcome = run_and_explain(config)
    results = outcome.results
    assert outcome.exit_code == EXIT_VALID, (results["bad"], results["notes"])
    assert results["complete"] and outcome.valid
    assert results["faults"]["injected"] >= 3, results["faults"]
    assert results["workload"]["sends_ok"] > 1000
    assert results["checker"]["anomalies"]["unseen"]["count"] == 0  # the drain was long enough
    assert results["acked_not_in_final_log"]["count"] == 0
    assert results["drain"]["nodes"]  # every replica's log was read after a clean stop
    assert all(results["drain"]["stopped_cleanly"].values())
    out = outcome.out_dir
    for name in ("history.jsonl", "results.json", "harness.log"):
        assert (out / name).is_file(), name
    ops = load_jsonl(out / "history.jsonl")
    assert len(ops) == results["checker"]["summary"]["ops"]


def test_a_short_run_through_the_kafka_client_is_valid(tmp_path: Path) -> None:
    """The same history through confluent-kafka (librdkafka's idempotent producer, an assigning
    consumer) and every broker's Kafka listener: the same checker must find nothing."""
    config = RunConfig(
        nodes=3,
        nemeses=("partition", "kill"),
        time_limit_s=20,
        rate_per_s=80,
        seed=20260601,
        out_dir=tmp_path / "kafka",
        fault_interval_s=(2.0, 4.0),
        fault_duration_s=(3.0, 6.0),
        quiet_s=3.0,
        client="kafka",
        prefix=PREFIX,
        live=False,
    )
    outcome = run_and_explain(config)
    results = outcome.results
    print(f"client {results['client']}")
    assert outcome.exit_code == EXIT_VALID, (results["bad"], results["notes"])
    assert results["complete"] and outcome.valid
    assert results["client"]["name"] == "kafka" and "--client kafka" in results["config"]["command"]
    assert results["workload"]["producer"]["mode"] == "librdkafka-idempotent"
    assert results["faults"]["injected"] >= 2, results["faults"]
    assert results["workload"]["sends_ok"] > 500
    assert results["workload"]["polls_ok"] > 0
    assert results["acked_not_in_final_log"]["count"] == 0
    assert results["checker"]["anomalies"]["unseen"]["count"] == 0


@pytest.mark.slow  # CI's 20 minutes: `make test-slow` runs it
def test_every_partition_recovers_within_two_seconds_of_a_ring_or_bridge_heal(
    tmp_path: Path,
) -> None:
    """Issue 21: with gRPC's default channels, 5 of 6 ring and bridge heals in the seed-4242
    run took 2.5-6.3 s or never recovered before the next fault (TCP's backoff on a connection
    kept through a silent cut, and gRPC's reconnect backoff); proto/channel.py's keepalive and
    0.4 s connect attempts brought every heal under 1.1 s."""
    config = RunConfig(
        nodes=5,
        nemeses=("majorities-ring", "bridge"),
        time_limit_s=40,
        rate_per_s=80,
        seed=2121,
        out_dir=tmp_path / "heals",
        fault_interval_s=(2.0, 3.0),
        fault_duration_s=(8.0, 10.0),
        producer_mode="idempotent",
        max_recovery_s=2.0,
        prefix=PREFIX,
        live=False,
    )
    outcome = run_and_explain(config)
    results = outcome.results
    avail = results["availability"]
    print(f"heals {avail['heals']}, worst {avail['worst_recovery_s']} s")
    assert outcome.exit_code == EXIT_VALID, (avail, results["bad"], results["notes"])
    assert avail["heals"] >= 2 and avail["worst_recovery_s"] <= 2.0, avail


def scenario(tmp_path: Path, *, unsafe: bool) -> RunConfig:
    return RunConfig(
        nodes=3,
        nemeses=(UNCLEAN_SCENARIO,),
        time_limit_s=30,
        rate_per_s=80,
        seed=7,
        out_dir=tmp_path / ("unsafe" if unsafe else "safe"),
        unsafe=unsafe,
        quiet_s=3.0,
        prefix=PREFIX,
        live=False,
    )


@pytest.mark.slow  # CI's 20 minutes: `make test-slow` runs it
def test_an_unclean_election_loses_acknowledged_writes_and_safe_settings_do_not(
    tmp_path: Path,
) -> None:
    unsafe = run_and_explain(scenario(tmp_path, unsafe=True))
    results = unsafe.results
    steps = [f["name"] for f in results["faults"]["records"]]
    assert steps == ["cut-leader-replication", "kill-cut-leader"], results["faults"]
    assert unsafe.exit_code == EXIT_ANOMALIES and unsafe.result is not None
    lost = unsafe.result[Kind.LOST_WRITE].count + unsafe.result[Kind.LOST_ON_NODE].count
    assert lost > 0, results["bad"]
    assert results["acked_not_in_final_log"]["count"] > 0
    assert unsafe.result[Kind.INCONSISTENT_OFFSETS].count > 0  # the new leader reused offsets

    safe = run_and_explain(scenario(tmp_path, unsafe=False))
    results = safe.results
    steps = [f["name"] for f in results["faults"]["records"]]
    assert steps == ["cut-leader-replication", "kill-cut-leader"], results["faults"]
    assert safe.exit_code == EXIT_VALID, (results["bad"], results["notes"])
    assert results["acked_not_in_final_log"]["count"] == 0
    # min.insync.replicas=2 refused the writes the leader would have taken alone
    assert results["workload"]["send_errors"].get("NOT_ENOUGH_REPLICAS", 0) > 0


def retrying(tmp_path: Path, mode: str, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "nodes": 3,
        "nemeses": ("none",),
        "time_limit_s": 12,
        "rate_per_s": 40,
        "seed": 11,
        "out_dir": tmp_path / mode,
        "quiet_s": 3.0,
        "prefix": PREFIX,
        "live": False,
        "producer_mode": mode,
        "drop_produce_responses": 0.3,
    }
    settings.update(overrides)
    return RunConfig(**settings)


def test_idempotent_retries_of_lost_answers_store_each_value_once_under_faults(
    tmp_path: Path,
) -> None:
    outcome = run_and_explain(
        retrying(
            tmp_path,
            "idempotent",
            nemeses=("partition", "kill"),
            time_limit_s=30,
            fault_interval_s=(3.0, 5.0),
            fault_duration_s=(4.0, 8.0),
        )
    )
    results = outcome.results
    assert outcome.exit_code == EXIT_VALID, (results["bad"], results["notes"])
    assert outcome.result is not None and outcome.result[Kind.DUPLICATE].count == 0
    assert results["faults"]["injected"] >= 2, results["faults"]
    producer = results["workload"]["producer"]
    assert producer["mode"] == "idempotent"
    # the lost answers were retried, and the broker answered the retries from its state
    assert producer["retried_ops"] > 50 and producer["dedupe_acks"] > 50, producer
    assert results["acked_not_in_final_log"]["count"] == 0


@pytest.mark.slow  # CI's 20 minutes: `make test-slow` runs it
def test_retries_without_a_producer_id_are_reported_as_duplicates(tmp_path: Path) -> None:
    outcome = run_and_explain(retrying(tmp_path, "retry"))
    results = outcome.results
    assert outcome.exit_code == EXIT_ANOMALIES and outcome.result is not None
    assert outcome.result[Kind.DUPLICATE].count > 0, results["bad"]
    assert results["workload"]["producer"]["dedupe_acks"] == 0
