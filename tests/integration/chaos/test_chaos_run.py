"""Whole chaos runs against real brokers in network namespaces (needs root and ``ip netns``).

Three runs, about two and a half minutes together on 2 cores:

1. a short seeded run — 3 nodes, partitions and kills — must come out valid and complete;
2. the proof that the harness can fail: the scripted unclean-leader scenario against a topic with
   Kafka 0.8's settings (``unclean.leader.election.enable=true``, ``min.insync.replicas=1``)
   must report acknowledged writes lost;
3. the same script against safe settings (unclean off, min ISR 2) must report none.

On failure each test prints the run folder and seed; ``raftlog chaos check <folder>`` re-checks
the history, and the replay command is in ``results.json``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from raftlog.chaos.checker import Kind
from raftlog.chaos.history import load_jsonl
from raftlog.chaos.netns import NetnsUnavailableError, check_available
from raftlog.chaos.runner import EXIT_ANOMALIES, EXIT_VALID, RunConfig, RunOutcome, run
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
