"""The pure parts of the perf tool and of ``make bench``: percentiles, pacing, the ack tracker,
merging workers, the workers' security, the report, failover gaps, py-spy profile summaries."""

from __future__ import annotations

import json
import math
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from raftlog.client.bench_cluster import (
    REFERENCE,
    TARGETS,
    Bound,
    Report,
    Target,
    cpu_ceiling_rps,
    cpu_us_per_record,
    failover_figures,
    render,
    top_functions,
)
from raftlog.client.perf import (
    LatencySummary,
    ProduceResult,
    ProduceSpec,
    Throttle,
    _AckTracker,
    _security_from_json,
    _security_to_json,
    make_payloads,
    merge_produce,
    percentile,
    split_spec,
)
from raftlog.client.security import ClientSecurity

# ---- percentiles -------------------------------------------------------------------------------


def test_nearest_rank_percentiles_of_a_small_list() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.0
    assert percentile(values, 75) == 3.0
    assert percentile(values, 99) == 4.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 0.1) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summary_of_one_to_a_thousand() -> None:
    summary = LatencySummary.of([float(i) for i in range(1000, 0, -1)])  # any order
    assert summary.count == 1000
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == (500.0, 950.0, 990.0)
    assert summary.p999_ms == 999.0  # not 1000: 99.9 % of 1000 is exactly 999 values
    assert summary.max_ms == 1000.0
    assert summary.avg_ms == pytest.approx(500.5)
    assert summary.to_json()["p99_ms"] == 990.0


def test_an_empty_summary_is_nan_and_null_in_json() -> None:
    summary = LatencySummary.of([])
    assert summary.count == 0 and math.isnan(summary.p99_ms)
    assert summary.to_json()["p99_ms"] is None
    assert summary.describe() == "no latency samples"


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.floats(0.01, 100))
def test_a_percentile_is_a_sample_with_at_least_q_percent_at_or_below(
    values: list[float], q: float
) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    at_or_below = sum(1 for v in ordered if v <= p)
    assert at_or_below >= q / 100 * len(ordered) - 1e-6
    below = sum(1 for v in ordered if v < p)
    assert below < q / 100 * len(ordered) + 1e-6  # and it is the smallest such value


# ---- pacing ------------------------------------------------------------------------------------


def test_throttle_pauses_only_when_ahead_by_the_minimum() -> None:
    throttle = Throttle(10_000, min_sleep_s=0.001)
    assert throttle.delay_s(0, 0.0) == 0.0
    assert throttle.delay_s(5, 0.0) == 0.0  # 0.5 ms ahead: keep bursting
    assert throttle.delay_s(20, 0.0) == pytest.approx(0.002)
    assert throttle.delay_s(20, 0.005) == 0.0  # behind: catch up at once
    assert Throttle(-1).delay_s(10**9, 0.0) == 0.0  # unlimited


@given(st.floats(100, 100_000), st.floats(0, 0.002))
def test_paced_sends_keep_to_the_target_rate(target: float, oversleep_s: float) -> None:
    """A simulated sender: sends take no time, sleeps overshoot by ``oversleep_s``; over a
    second the achieved rate is the target (the schedule is cumulative)."""
    throttle = Throttle(target)
    clock = 0.0
    sent = 0
    while clock < 1.0:
        pause = throttle.delay_s(sent, clock)
        if pause:
            clock += pause + oversleep_s
        sent += 1
    assert sent == pytest.approx(target * clock, abs=target * (0.001 + oversleep_s) + 2)


# ---- specs, results, merging -------------------------------------------------------------------


def test_split_spec_shares_records_and_rate() -> None:
    spec = ProduceSpec("t", num_records=10, record_size=100, throughput=300, producers=3)
    shares = split_spec(spec)
    assert [s.num_records for s in shares] == [4, 3, 3]
    assert all(s.throughput == 100 and s.producers == 1 for s in shares)
    unlimited = split_spec(ProduceSpec("t", num_records=2, record_size=1, producers=4))
    assert [s.num_records for s in unlimited] == [1, 1]  # no worker with nothing to do
    assert all(s.throughput == -1 for s in unlimited)


def test_spec_bounds() -> None:
    with pytest.raises(ValueError):
        ProduceSpec("t", num_records=0, record_size=1)
    with pytest.raises(ValueError):
        ProduceSpec("t", num_records=1, record_size=1, producers=0)


def _result(records: int, started: float, elapsed: float, **kw: Any) -> ProduceResult:
    spec = ProduceSpec("t", num_records=max(records, 1), record_size=1000)
    return ProduceResult(spec, records, 0, elapsed, LatencySummary.of([]), started_at=started, **kw)


def test_a_result_reports_records_and_megabytes_per_second() -> None:
    result = _result(50_000, 0.0, 2.0)
    assert result.records_per_s == 25_000
    assert result.mb_per_s == 25.0
    body = result.to_json()
    assert body["records_per_s"] == 25_000 and body["spec"]["record_size"] == 1000
    assert "25,000 records/s (25.00 MB/s)" in result.line()


def test_merged_workers_span_from_the_first_start_to_the_last_end() -> None:
    spec = ProduceSpec("t", num_records=300, record_size=1000, producers=2)
    a = _result(100, 10.0, 2.0, errors={"x": 1}, client_cpu_s=1.0)
    b = _result(200, 11.0, 2.0, errors={"x": 2, "y": 1}, client_cpu_s=0.5)
    merged = merge_produce(spec, [(a, [1.0, 2.0]), (b, [3.0, 4.0])])
    assert merged.records == 300
    assert merged.elapsed_s == 3.0  # 10.0 .. 13.0
    assert merged.records_per_s == 100
    assert merged.latency.count == 4 and merged.latency.max_ms == 4.0
    assert merged.errors == {"x": 3, "y": 1}
    assert merged.client_cpu_s == 1.5
    assert merge_produce(spec, []).records == 0


def test_payloads_are_distinct_letters_of_the_asked_size() -> None:
    payloads = make_payloads(100)
    assert len(payloads) == 64 and len(set(payloads)) == 64
    assert all(len(p) == 100 and p.isalpha() and p.isupper() for p in payloads)
    assert make_payloads(100) == payloads  # seeded


# ---- the ack tracker ---------------------------------------------------------------------------


class _SendFuture:
    """Like the producer's SendFuture: records of one batch share ``_batch_future``."""

    def __init__(self, batch: Future[int]) -> None:
        self._batch_future = batch


def test_records_of_one_batch_share_one_callback_and_get_their_own_latency() -> None:
    tracker = _AckTracker()
    first: Future[int] = Future()
    second: Future[int] = Future()
    for i, batch in enumerate([first, first, first, second, second]):
        tracker.track(_SendFuture(batch), sent_at=float(i))
    assert len(tracker.group_starts) == 2  # two callbacks for five records
    first.set_result(0)
    assert tracker.acked == 3
    second.set_exception(RuntimeError("boom"))
    tracker.done_at[0] = 10.0  # pin the completion times: latencies are exact per record
    acked, failed, errors, latencies = tracker.results()
    assert (acked, failed) == (3, 2)
    assert errors == {"RuntimeError: boom": 2}
    assert list(latencies) == [10_000.0, 9_000.0, 8_000.0]


def test_a_batch_seen_again_after_another_opens_a_new_group() -> None:
    tracker = _AckTracker()
    a: Future[int] = Future()
    b: Future[int] = Future()
    for i, batch in enumerate([a, b, a]):  # keyed records interleave partitions
        tracker.track(_SendFuture(batch), sent_at=float(i))
    a.set_result(0)
    b.set_result(0)
    acked, failed, _, latencies = tracker.results()
    assert (acked, failed, len(latencies)) == (3, 0, 3)


def test_futures_without_a_batch_are_tracked_one_by_one_and_unfinished_ones_fail() -> None:
    tracker = _AckTracker()
    done: Future[int] = Future()
    pending: Future[int] = Future()
    tracker.track(done, 0.0)
    tracker.track(pending, 0.0)
    done.set_result(1)
    acked, failed, errors, _ = tracker.results()
    assert (acked, failed) == (1, 1)
    assert errors == {"never completed": 1}


# ---- the workers' security ----------------------------------------------------------------------


def test_a_worker_gets_the_parents_tls_material_through_its_json_order() -> None:
    tls = ClientSecurity(b"-----CA-----\n\x00", b"-----CERT-----\n", b"-----KEY-----\n")
    order = json.loads(json.dumps({"security": _security_to_json(tls)}))  # as on the pipe
    assert _security_from_json(order["security"]) == tls
    plaintext = ClientSecurity.plaintext()
    assert _security_to_json(plaintext) is None
    assert _security_from_json(None) == plaintext
    server_auth_only = ClientSecurity(b"ca", None, None)  # no client certificate
    assert _security_from_json(_security_to_json(server_auth_only)) == server_auth_only


# ---- make bench: targets, report, failover, profiles -----------------------------------------


def test_targets_and_their_bounds() -> None:
    assert Target("a", 5.0, Bound.AT_MOST).met(5.0)
    assert not Target("a", 1.0, Bound.BELOW).met(1.0)
    assert Target("a", 400_000, Bound.AT_LEAST).met(400_000)
    assert Target("a", 400_000, Bound.AT_LEAST).describe() == "≥ 400,000"
    keys = {t.key for t in TARGETS}
    assert keys == {"produce_rps_100b", "produce_mbps_16k", "p99_ms_at_10k", "failover_s"}


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
