"""The pure parts of the perf tool (``raftlog bench``): pacing, the ack tracker, merging
workers, the workers' security."""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.client.perf_engines import _AckTracker
from raftlog.client.perf_results import (
    ProduceResult,
    ProduceSpec,
    Throttle,
    make_payloads,
    merge_produce,
    split_spec,
)
from raftlog.client.perf_workers import _security_from_json, _security_to_json
from raftlog.client.security import ClientSecurity
from raftlog.client.stats import LatencySummary

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
