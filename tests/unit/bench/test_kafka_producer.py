"""The pure parts of ``make bench``'s librdkafka step (bench/kafka_producer.py): a round's
check against what the topic holds, its figures and the ratio to the Python Producer, the
brokers' log summary, and how the cluster report shows them; and the scaffolding it touched in
bench/common.py (the Kafka ports of a free base port, a run's failures and its exit status)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from bench import common
from bench.cluster import Report, render
from bench.common import FigureReport, free_base_port, measure_and_report
from bench.kafka_producer import (
    FLUSH_TIMEOUT_S,
    MESSAGE_TIMEOUT_MS,
    KafkaRound,
    kafka_figures,
    kafka_settings,
    listener_log_summary,
    round_problems,
    round_timeout_s,
    to_python_ratio,
)


def a_round(**changes: object) -> KafkaRound:
    """A clean round: 200,000 records of 100 B in 2 s after 3 warm-up records, the topic's
    watermarks matching."""
    body: dict[str, object] = {
        "record_size": 100,
        "sent": 200_000,
        "records": 200_000,
        "warm_up_records": 3,
        "failed": 0,
        "unanswered": 0,
        "elapsed_s": 2.0,
        "client_cpu_s": 0.5,
        "watermarks": [[0, 70_001], [0, 60_001], [0, 70_001]],
        "errors": {},
        "client_errors": {},
        "fatal": None,
    }
    body.update(changes)
    return KafkaRound.from_json(body)


# ---- a round and its check -----------------------------------------------------------------------


def test_a_round_survives_its_json_and_gives_rates() -> None:
    result = a_round()
    assert KafkaRound.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert result.records_per_s == pytest.approx(100_000)
    assert result.mb_per_s == pytest.approx(10.0)  # MB = 10^6 bytes
    assert result.topic_records == 200_003
    assert "100,000 records/s" in result.line()


def test_a_clean_round_whose_counts_match_the_topic_has_no_problem() -> None:
    assert round_problems(a_round(), acked_before=0, topic_records=200_003) == []


def test_a_later_round_counts_what_the_earlier_ones_acknowledged() -> None:
    later = a_round(watermarks=[[0, 140_002], [0, 120_002], [0, 140_002]])
    assert round_problems(later, acked_before=200_003, topic_records=400_006) == []
    assert round_problems(later, acked_before=0, topic_records=400_006)  # forgot the first


def test_delivery_errors_fail_a_round_and_are_not_throughput() -> None:
    failed = a_round(records=199_990, failed=10, errors={"Local: Message timed out": 10})
    problems = round_problems(failed, acked_before=0, topic_records=199_993)
    assert problems[0].startswith("10 delivery errors (Local: Message timed out ×10")
    # the watermarks still hold 200,003: the 10 may have been written after all
    assert any("Kafka ListOffsets says the topic holds 200,003" in p for p in problems)


def test_counts_that_do_not_match_the_topic_fail_a_round() -> None:
    lost = a_round(watermarks=[[0, 70_001], [0, 60_001], [0, 69_999]])
    problems = round_problems(lost, acked_before=0, topic_records=200_003)
    assert problems == [
        "200,003 records acknowledged, but Kafka ListOffsets says the topic holds 200,001"
    ]
    problems = round_problems(a_round(), acked_before=0, topic_records=200_004)
    assert problems == [
        "200,003 records acknowledged, but the brokers' gRPC ListOffsets says the topic holds "
        "200,004"
    ]


def test_unanswered_fatal_and_empty_rounds_fail() -> None:
    assert any(
        "neither acknowledged nor failed" in p
        for p in round_problems(a_round(unanswered=5), acked_before=0, topic_records=200_003)
    )
    fatal = a_round(fatal="Fatal: producer fenced")
    assert round_problems(fatal, 0, 200_003) == ["librdkafka: Fatal: producer fenced"]
    empty = a_round(sent=0, records=0, elapsed_s=0.0, watermarks=[[0, 1], [0, 1], [0, 1]])
    assert round_problems(empty, 0, 3) == ["no record was acknowledged"]
    assert empty.records_per_s == 0.0


# ---- figures and settings ------------------------------------------------------------------------


def test_the_ratio_is_to_the_python_producer_at_the_same_size() -> None:
    assert to_python_ratio(300_000, 240_000) == 1.25
    assert to_python_ratio(300_000, None) is None
    assert to_python_ratio(300_000, 0.0) is None


def test_figures_of_a_size_from_its_best_round() -> None:
    cores = {"brokers": 1.3, "client": 0.4, "wall_s": 4.0}
    figures = kafka_figures("100b", a_round(), cores, 0.3, {"100b": 80_000.0})
    assert figures == {
        "kafka_produce_rps_100b": 100_000.0,
        "kafka_produce_mbps_100b": 10.0,
        "kafka_broker_cpu_us_per_record_100b": 20.0,  # (1.3 - 0.3) cores x 4 s / 200,000
        "kafka_client_cpu_us_per_record_100b": 2.5,  # 0.5 s / 200,000
        "kafka_to_python_ratio_100b": 1.25,
    }
    assert "kafka_to_python_ratio_16k" not in kafka_figures("16k", a_round(), cores, 0.3, {})


def test_the_settings_are_acks_all_idempotent_uncompressed_and_bounded() -> None:
    settings = kafka_settings(linger_ms=5, batch_bytes=256 << 10)
    assert settings["acks"] == "all" and settings["enable.idempotence"] is True
    assert settings["compression.type"] == "none"
    assert (settings["linger.ms"], settings["batch.size"]) == (5, 262_144)
    # a stuck record fails before the flush gives up, so a flush ends with every record answered
    assert settings["message.timeout.ms"] == MESSAGE_TIMEOUT_MS < FLUSH_TIMEOUT_S * 1000
    assert round_timeout_s(8.0) > 8.0 + FLUSH_TIMEOUT_S


# ---- the brokers' logs ---------------------------------------------------------------------------


def test_the_listener_log_summary_counts_warnings_closings_and_errors() -> None:
    lines = [
        "2026-12-06 23:48:28,420 INFO raftlog.cluster.coordinator: coordinating 0 group(s)\n",
        "2026-12-06 23:48:29,001 INFO raftlog.cluster.kafka_listener: Kafka listener: closing "
        "127.0.0.1:5000: malformed Produce v9\n",
        "2026-12-06 23:48:29,002 WARNING raftlog.cluster.kafka_listener: Kafka listener: 100 "
        "connections, refusing one\n",
        "2026-12-06 23:48:29,003 WARNING raftlog.cluster.replica_manager: follower lagging\n",
        "2026-12-06 23:48:35,902 ERROR asyncio: Exception in callback StreamReaderProtocol\n",
        "Traceback (most recent call last):\n",
        "asyncio.exceptions.CancelledError\n",
        "2026-12-06 23:48:35,903 ERROR asyncio: Exception in callback StreamReaderProtocol\n",
    ]
    summary = listener_log_summary(lines)
    assert (summary["warnings"], summary["closed_connections"], summary["errors"]) == (1, 1, 2)
    assert summary["samples"] == [
        "INFO raftlog.cluster.kafka_listener: Kafka listener: closing 127.0.0.1:5000: "
        "malformed Produce v9",
        "WARNING raftlog.cluster.kafka_listener: Kafka listener: 100 connections, refusing one",
        "ERROR asyncio: Exception in callback StreamReaderProtocol",  # once: samples are distinct
    ]
    assert listener_log_summary([])["samples"] == []


# ---- the cluster report --------------------------------------------------------------------------


def test_the_cluster_report_shows_the_kafka_figures_settings_and_failures() -> None:
    figures = {
        "produce_rps_100b": 240_000.0,
        "kafka_produce_rps_100b": 300_000.0,
        "kafka_produce_mbps_100b": 30.0,
        "kafka_to_python_ratio_100b": 1.25,
    }
    meta = {
        "security": "tls",
        "kafka_producer": {
            "settings": kafka_settings(5, 256 << 10),
            "librdkafka": "2.16.0",
            "rounds": 2,
            "seconds": 8.0,
        },
    }
    report = Report(figures, meta, ("kafka producer 16k round 1: 3 delivery errors",))
    body = report.to_json()
    assert body["kafka_producer_settings"]["linger.ms"] == 5
    assert body["kafka_producer_settings"]["compression.type"] == "none"
    assert body["failures"] == ["kafka producer 16k round 1: 3 delivery errors"]
    console = Console(width=220, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "300,000 rec/s" in text and "1.25×" in text and "librdkafka 2.16.0" in text
    assert "failures" not in Report(figures, {"security": "tls"}).to_json()


# ---- bench/common.py: ports, failures ------------------------------------------------------------


def test_a_free_base_port_keeps_the_kafka_listeners_in_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []

    def free(port: int) -> bool:
        asked.append(port)
        return True

    monkeypatch.setattr(common, "port_free", free)
    low, high = common._PORT_RANGE
    assert high < 32_768  # below Linux's ephemeral ports
    for seed in range(300):
        for nodes in (1, 3, 5):
            asked.clear()
            base = free_base_port(nodes, random.Random(seed))
            assert set(asked) >= {base + 400 + i for i in range(nodes)}  # the Kafka ports
            assert low <= min(asked) and max(asked) < high


def test_a_failure_is_reported_and_exits_1_though_every_target_is_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM

    def measure(args: argparse.Namespace, console: Console) -> FigureReport:
        return FigureReport({"a": 1.0}, {}, ("kafka producer 100b: no record was acknowledged",))

    def render_it(report: FigureReport) -> Table:
        return Table()

    out = tmp_path / "r.json"
    args = argparse.Namespace(out=str(out), strict=False)
    assert measure_and_report(measure, render_it, args, interrupted="") == 1
    assert json.loads(out.read_text())["failures"] == [
        "kafka producer 100b: no record was acknowledged"
    ]

    def clean(args: argparse.Namespace, console: Console) -> FigureReport:
        return FigureReport({"a": 1.0})

    assert measure_and_report(clean, render_it, args, interrupted="") == 0
    assert "failures" not in json.loads(out.read_text())
