"""The pure parts of ``make bench`` (bench/cluster.py and its modules): targets, the report,
failover gaps, py-spy profile summaries, CPU per record."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from bench.cluster import REFERENCE, TARGETS, Report, render
from bench.cluster_failover import failover_figures
from bench.cluster_profile import top_functions
from bench.common import Bound, Target
from bench.machine import cpu_ceiling_rps, cpu_us_per_record

# ---- make bench: targets, report, failover, profiles -----------------------------------------


def test_targets_and_their_bounds() -> None:
    assert Target("a", 5.0, Bound.AT_MOST).met(5.0)
    assert not Target("a", 1.0, Bound.BELOW).met(1.0)
    assert Target("a", 400_000, Bound.AT_LEAST).met(400_000)
    assert Target("a", 400_000, Bound.AT_LEAST).describe() == "≥ 400,000"
    keys = {t.key for t in TARGETS}
    assert keys == {
        "produce_rps_100b",
        "produce_mbps_16k",
        "p99_ms_at_10k",
        "failover_s",
        "idle_cores",
    }


def test_report_json_has_the_issue_keys_and_verdicts() -> None:
    figures = {
        "produce_rps_100b": 450_000.0,
        "produce_mbps_1k": 50.0,
        "produce_mbps_16k": 100.0,
        "p99_ms_at_10k": 4.0,
        "consume_mbps_1k": 80.0,
        "failover_s": 2.0,
        "raw_disk_mbps": 600.0,
    }
    report = Report(figures, {"repeat": 2, "cpu_count": 2, "security": "tls"})
    body = report.to_json()
    assert {k: body[k] for k in figures} == figures
    assert body["security"] == "tls"
    assert body["targets"]["produce_rps_100b"]["ok"] is True
    assert body["targets"]["produce_mbps_16k"]["ok"] is False
    assert body["all_targets_met"] is False
    assert body["reference_nats_r3"] == REFERENCE
    console = Console(width=200, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "450,000 rec/s" in text and "MISS" in text and "91.0 MB/s" in text
    assert "mutual TLS" in " ".join(text.split())  # the title may wrap


def test_a_report_says_plaintext_when_it_was_and_before_tls_existed() -> None:
    for meta in ({"security": "plaintext"}, {}):
        report = Report({"produce_mbps_16k": 100.0}, meta)
        assert report.to_json()["security"] == "plaintext"
        console = Console(width=200, record=True)
        console.print(render(report))
        assert "plaintext" in console.export_text()


def test_failover_is_the_longest_ack_gap_of_the_killed_leaders_partitions() -> None:
    acks = [(t / 10, 0) for t in range(10)]  # partition 0: every 0.1 s until 0.9
    acks += [(2.5, 0), (2.6, 0)]  # ... then back at 2.5 s
    acks += [(t / 10, 1) for t in range(30)]  # partition 1 never stops
    figures = failover_figures(acks, kill_at=1.0, victims={0}, end_at=3.0)
    assert figures.longest_gap_s == pytest.approx(1.6)  # 0.9 → 2.5
    assert figures.recovered_s == pytest.approx(1.5)  # kill at 1.0 → 2.5
    assert figures.other_gap_s == pytest.approx(0.1)


def test_an_answer_landing_just_after_the_kill_does_not_end_the_outage() -> None:
    acks = [(0.9, 0), (1.01, 0), (3.0, 0), (3.1, 0)]  # 1.01: sent to the old leader before
    figures = failover_figures(acks, kill_at=1.0, victims={0}, end_at=4.0)
    assert figures.longest_gap_s == pytest.approx(1.99)
    assert figures.recovered_s == pytest.approx(2.0)


def test_a_partition_that_never_came_back_is_out_until_the_end() -> None:
    acks = [(0.5, 0), (0.5, 1)]
    figures = failover_figures(acks, kill_at=1.0, victims={0, 2}, end_at=5.0)
    assert figures.longest_gap_s == pytest.approx(4.5)  # 0.5 → end; partition 2 had none
    assert figures.recovered_s == pytest.approx(4.0)


def test_top_functions_of_a_py_spy_raw_profile() -> None:
    lines = [
        "thread (11): MainThread;main (perf.py:10);send (producer.py:170);"
        "append (batch.py:418) 6\n",
        "thread (12): raftlog-producer;_run (producer.py:270);ready (accumulator.py:128) 3\n",
        "thread (13): Thread-14 (_run);spin (grpc/_channel.py:1722) 1\n",
        "garbage\n",
    ]
    summary = top_functions(lines, count=3)
    assert summary.samples == 10
    assert summary.self_top[0] == ("batch.py:append", 0.6)
    assert ("producer.py:send", 0.6) in summary.total_top
    assert summary.threads == [
        ("MainThread", 0.6),
        ("raftlog-producer", 0.3),
        ("Thread-N (_run)", 0.1),
    ]
    assert top_functions([]).samples == 0


def test_cpu_per_record_is_the_marginal_cost_above_idle() -> None:
    cores = {"brokers": 0.5, "wall_s": 10.0}
    broker_us, client_us = cpu_us_per_record(cores, 0.3, client_cpu_s=6.0, records=1_000_000)
    assert broker_us == pytest.approx(2.0)  # (0.5 - 0.3) cores x 10 s / 1e6 records
    assert client_us == pytest.approx(6.0)
    assert cpu_ceiling_rps(broker_us, client_us, 0.3, cpu_count=2) == pytest.approx(212_500)
    assert all(math.isnan(x) for x in cpu_us_per_record(cores, 0.0, 1.0, 0))
