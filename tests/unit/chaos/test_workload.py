"""The pure parts of a chaos run, without a cluster: how a produce answer becomes ok / fail /
info, how polled records become history values, the recorder, the fault plan (families, the
seeded schedule, the unclean scenario's script and target), the scenario nemeses against a fake
cluster, the nemesis thread's schedule → fault-log glue, the report figures, the live view, the
timeline picture, and the CLI wiring."""

from __future__ import annotations

import io
import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from rich.console import Console

from raftlog.chaos.anomalies import Kind
from raftlog.chaos.checker import check
from raftlog.chaos.cli import _parser as chaos_parser
from raftlog.chaos.cli import main as chaos_main
from raftlog.chaos.history import (
    HistoryBuilder,
    Op,
    OpF,
    OpType,
    dump_jsonl,
    load_jsonl,
    read_value,
    send_value,
)
from raftlog.chaos.nemesis import NEMESIS_NAMES, FaultRecord, NemesisContext
from raftlog.chaos.report import (
    LiveSnapshot,
    acked_not_in_final_log,
    render_live,
    run_figures,
    timeline_from_history,
    write_timeline_png,
)
from raftlog.chaos.run_config import RunConfig, plan_faults
from raftlog.chaos.scenario import (
    CUT_STEP,
    KILL_STEP,
    UNCLEAN_SCENARIO,
    FaultLog,
    NemesisThread,
    PartitionState,
    choose_unclean_target,
    families,
    fault_actions,
    parse_nemeses,
    scenario_nemeses,
    schedule_names,
    unclean_script,
)
from raftlog.chaos.schedule import ScheduledFault
from raftlog.chaos.workload import (
    DEFINITE_FAIL_CODES,
    ProducerWorker,
    Recorder,
    SendResult,
    ValueSource,
    classify_code,
    combine_attempts,
    decode_value,
    group_records,
    partitions_of_worker,
    records_value,
    rpc_error_result,
    send_result_from_answer,
)
from raftlog.client import ClientSecurity
from raftlog.proto import broker_pb2, common_pb2
from raftlog.proto.errors import ERRORS_BY_NAME
from raftlog.segments.clock import SYSTEM_CLOCK

# ---- outcome classification ----------------------------------------------------------------


def answer(
    code_name: str = "NONE", base_offset: int = 7, message: str = ""
) -> broker_pb2.ProduceResponse:
    code = 0 if code_name == "NONE" else ERRORS_BY_NAME[code_name].code
    return broker_pb2.ProduceResponse(
        partitions=[
            broker_pb2.PartitionProduceResult(
                topic="t",
                partition=1,
                error=common_pb2.Error(code=code, message=message),
                base_offset=base_offset if code == 0 else -1,
            )
        ]
    )


def test_an_acknowledged_send_is_ok_at_its_base_offset() -> None:
    assert send_result_from_answer(answer(), "t", 1) == SendResult(OpType.OK, offset=7)


@pytest.mark.parametrize("name", sorted(DEFINITE_FAIL_CODES))
def test_answers_given_before_the_append_are_definite_failures(name: str) -> None:
    assert classify_code(name) is OpType.FAIL
    result = send_result_from_answer(answer(name, message="why"), "t", 1)
    assert result.type is OpType.FAIL and result.offset is None
    assert result.error == f"{name}: why"


@pytest.mark.parametrize(
    "name",
    [
        "REQUEST_TIMED_OUT",  # appended, not replicated in time
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",  # appended, the ISR shrank
        "NOT_LEADER_OR_FOLLOWER",  # also after the append, when leadership moved
        "FENCED_LEADER_EPOCH",
        "KAFKA_STORAGE_ERROR",
        "UNKNOWN_SERVER_ERROR",
        "SOMETHING_NEW",
    ],
)
def test_every_other_answer_is_unknown(name: str) -> None:
    assert classify_code(name) is OpType.INFO


def test_the_brief_s_named_cases() -> None:
    assert classify_code("NOT_ENOUGH_REPLICAS") is OpType.FAIL
    for name in ("REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "NOT_LEADER_OR_FOLLOWER"):
        assert classify_code(name) is OpType.INFO


def test_odd_answers_are_unknown_never_ok() -> None:
    # ok without an offset cannot be placed; a response without our partition says nothing
    assert send_result_from_answer(answer(base_offset=-1), "t", 1).type is OpType.INFO
    assert send_result_from_answer(answer(), "t", 2).type is OpType.INFO
    unknown_code = broker_pb2.ProduceResponse(
        partitions=[
            broker_pb2.PartitionProduceResult(
                topic="t", partition=1, error=common_pb2.Error(code=9999)
            )
        ]
    )
    result = send_result_from_answer(unknown_code, "t", 1)
    assert result.type is OpType.INFO and result.error is not None and "CODE_9999" in result.error
    whole = broker_pb2.ProduceResponse(
        error=common_pb2.Error(code=ERRORS_BY_NAME["NOT_ENOUGH_REPLICAS"].code)
    )
    assert send_result_from_answer(whole, "t", 1).type is OpType.FAIL


def duplicate_answer(original_offset: int) -> broker_pb2.ProduceResponse:
    """What the broker answers a retry of a batch it already stored (replica_manager)."""
    return broker_pb2.ProduceResponse(
        partitions=[
            broker_pb2.PartitionProduceResult(
                topic="t",
                partition=1,
                error=common_pb2.Error(
                    code=ERRORS_BY_NAME["DUPLICATE_SEQUENCE_NUMBER"].code, message="a retry"
                ),
                base_offset=original_offset,
            )
        ]
    )


def test_a_duplicate_answer_acknowledges_the_original_only_for_a_sequenced_batch() -> None:
    sequenced = send_result_from_answer(duplicate_answer(41), "t", 1, idempotent=True)
    assert sequenced == SendResult(OpType.OK, offset=41, duplicate=True)
    # without a producer id the broker cannot have said it: unknown, never ok
    assert send_result_from_answer(duplicate_answer(41), "t", 1).type is OpType.INFO
    # a duplicate without an offset cannot be placed
    assert (
        send_result_from_answer(duplicate_answer(-1), "t", 1, idempotent=True).type is OpType.INFO
    )


OK5 = SendResult(OpType.OK, offset=5)
FAIL = SendResult(OpType.FAIL, error="NOT_ENOUGH_REPLICAS: isr 1 < 2")
INFO = SendResult(OpType.INFO, error="NETWORK: UNAVAILABLE")


def test_a_retried_op_is_ok_when_any_attempt_was_acknowledged() -> None:
    assert combine_attempts([INFO, FAIL, OK5]) == OK5
    assert combine_attempts([OK5]) == OK5


def test_a_retried_op_fails_only_when_every_attempt_was_refused_before_the_append() -> None:
    assert combine_attempts([FAIL, FAIL]) == FAIL
    # one attempt may have been appended: whatever came after, the op is unknown
    later_refused = combine_attempts([INFO, FAIL])
    assert later_refused.type is OpType.INFO
    assert later_refused.error == f"{INFO.error} (then {FAIL.error})"
    assert combine_attempts([FAIL, INFO]) == INFO
    with pytest.raises(ValueError):
        combine_attempts([])


def test_an_unknown_producer_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="producer mode"):
        ProducerWorker(
            0,
            Recorder(time.monotonic),
            "127.0.0.1:1",
            "t",
            3,
            ValueSource(),
            10.0,
            threading.Event(),
            random.Random(0),
            security=ClientSecurity.plaintext(),
            mode="twice",
        )
    with pytest.raises(ValueError, match="--producer"):
        RunConfig(producer_mode="twice")
    with pytest.raises(ValueError, match="--drop-produce-responses"):
        RunConfig(drop_produce_responses=1.0)


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_transport_errors_are_unknown(code: grpc.StatusCode) -> None:
    result = rpc_error_result(FakeRpcError(code))
    assert result == SendResult(OpType.INFO, error=f"NETWORK: {code.name}")


def test_values_decode_to_the_ints_written_and_anything_else_to_text() -> None:
    assert decode_value(b"17") == 17
    assert decode_value(b"-3") == -3
    assert decode_value(b"x17") == "x17"
    assert decode_value(None) == "<null>"
    assert decode_value(b"\xff\x00") == repr(b"\xff\x00")


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None


def test_polled_records_group_by_where_they_were_read() -> None:
    records = [
        Rec("t", 0, 4, b"1"),
        Rec("t", 1, 0, b"2"),
        Rec("t", 0, 5, b"3"),
        Rec("t", 0, 6, b"?"),
    ]
    grouped = group_records(records)
    assert grouped == {"t-0": [(4, 1), (5, 3), (6, "?")], "t-1": [(0, 2)]}
    assert records_value(grouped, {"t-0": 4}) == {
        "records": {"t-0": [[4, 1], [5, 3], [6, "?"]], "t-1": [[0, 2]]},
        "start": {"t-0": 4},
    }


# ---- the recorder ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.ms = 0.0

    def __call__(self) -> float:
        return self.ms


def test_the_recorder_writes_each_op_as_it_happens_and_counts() -> None:
    clock = FakeClock()
    out = io.StringIO()
    recorder = Recorder(clock, out)
    op = recorder.invoke(0, OpF.SEND, send_value("t-0", 1))
    clock.ms = 5.0
    recorder.complete(op, OpType.OK, send_value("t-0", 1, 0))
    op = recorder.invoke(1, OpF.SEND, send_value("t-0", 2))
    recorder.complete(op, OpType.INFO, error="REQUEST_TIMED_OUT: slow")
    op = recorder.invoke(1, OpF.SEND, send_value("t-1", 3))
    recorder.complete(op, OpType.FAIL, error="NOT_ENOUGH_REPLICAS: few")
    poll = recorder.invoke(2, OpF.POLL)
    recorder.complete(poll, OpType.OK, read_value({"t-0": [(0, 1)]}, {"t-0": 0}))
    lines = out.getvalue().splitlines()
    assert len(lines) == 8  # written at once, one line per op
    ops = load_jsonl(io.StringIO(out.getvalue()))
    assert ops == list(recorder.ops)
    assert ops[1].time_ms == 5.0 and ops[1].value["offset"] == 0
    counters, errors = recorder.snapshot_counters()
    assert (counters.sends_ok, counters.sends_info, counters.sends_fail) == (1, 1, 1)
    assert (counters.polls_ok, counters.records_read) == (1, 1)
    assert dict(errors) == {"REQUEST_TIMED_OUT": 1, "NOT_ENOUGH_REPLICAS": 1}
    clock.ms = 1000.0
    assert recorder.sends_per_s(window_ms=2000.0) == 1.5  # three completed sends in 2 s
    clock.ms = 10_000.0
    assert recorder.sends_per_s(window_ms=2000.0) == 0.0


def test_values_are_unique_across_threads() -> None:
    source = ValueSource()
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [source.take() for _ in range(1000)]
        with lock:
            taken.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(taken) == list(range(4000))


# ---- the fault plan --------------------------------------------------------------------------


def test_nemesis_names_parse_and_refuse_nonsense() -> None:
    assert parse_nemeses("partition,kill, pause") == ("partition", "kill", "pause")
    assert parse_nemeses("kill,kill") == ("kill",)
    assert parse_nemeses(UNCLEAN_SCENARIO) == (UNCLEAN_SCENARIO,)
    for name in NEMESIS_NAMES:
        assert parse_nemeses(name) == (name,)
    with pytest.raises(ValueError, match="unknown nemesis"):
        parse_nemeses("partition,flood")
    with pytest.raises(ValueError, match="alone"):
        parse_nemeses(f"{UNCLEAN_SCENARIO},kill")
    with pytest.raises(ValueError, match="alone"):
        parse_nemeses("none,kill")
    with pytest.raises(ValueError):
        parse_nemeses(" , ")


@pytest.mark.parametrize("nodes", [3, 5])
def test_every_family_the_user_names_is_equally_likely(nodes: int) -> None:
    names = schedule_names(("partition", "kill", "pause"), nodes)
    partition = families(nodes)["partition"]
    weight = names.count("kill")
    assert names.count("pause") == weight
    assert sum(names.count(k) for k in partition) == weight
    assert len({names.count(k) for k in partition}) == 1  # kinds share their family's weight
    assert ("majorities-ring" in names) == (nodes == 5)  # a 3-node ring breaks every link
    assert set(names) <= set(NEMESIS_NAMES)
    assert schedule_names(("none",), nodes) == ()


def test_the_seeded_plan_replays_and_stays_inside_the_time_limit() -> None:
    config = RunConfig(time_limit_s=120, seed=9, fault_interval_s=(2, 4), fault_duration_s=(3, 6))
    plan = plan_faults(config)
    assert plan == plan_faults(config)
    assert plan != plan_faults(RunConfig(time_limit_s=120, seed=10, fault_interval_s=(2, 4)))
    assert len(plan) >= 10
    assert all(e.start_at_s + e.duration_s <= 120 for e in plan)
    assert {e.nemesis for e in plan} <= set(schedule_names(config.nemeses, 3))
    assert plan_faults(RunConfig(nemeses=("none",))) == []


def test_the_unclean_script_kills_the_cut_leader_before_the_cut_heals() -> None:
    cut, kill = unclean_script(replica_lag_ms_max=5000, session_timeout_ms=1500, time_limit_s=40)
    assert (cut.nemesis, kill.nemesis) == (CUT_STEP, KILL_STEP)
    cut_end = cut.start_at_s + cut.duration_s
    # the ISR can shrink (lag + a check) and the leader acknowledges alone before the kill
    assert kill.start_at_s - cut.start_at_s >= 5.0 + 1.0 + 5.0
    assert kill.start_at_s < cut_end  # killed while still cut off: no catch-up
    assert kill.duration_s > 1.5 + 5.0  # fencing, then writes to the uncleanly elected leader
    with pytest.raises(ValueError, match="--time-limit >= 30"):
        unclean_script(replica_lag_ms_max=5000, session_timeout_ms=1500, time_limit_s=25)
    config = RunConfig(nemeses=(UNCLEAN_SCENARIO,), time_limit_s=30, unsafe=True)
    assert plan_faults(config) == [cut, kill]
    assert config.replication_factor == 2 and config.min_insync_replicas == 1
    assert config.topic_configs["unclean.leader.election.enable"] == "true"
    safe = RunConfig(nemeses=(UNCLEAN_SCENARIO,), time_limit_s=30)
    assert safe.replication_factor == 2 and safe.min_insync_replicas == 2
    assert safe.topic_configs["unclean.leader.election.enable"] == "false"
    assert RunConfig(nodes=5, nemeses=(UNCLEAN_SCENARIO,), time_limit_s=30).replication_factor == 3


def test_fault_actions_put_stops_first_and_allow_overlap() -> None:
    events = [ScheduledFault(5.0, CUT_STEP, 12.5), ScheduledFault(17.0, KILL_STEP, 9.5)]
    assert fault_actions(events) == [
        (5.0, 1, 0, "start"),
        (17.0, 1, 1, "start"),
        (17.5, 0, 0, "stop"),
        (26.5, 0, 1, "stop"),
    ]
    back_to_back = [ScheduledFault(1.0, "kill", 2.0), ScheduledFault(3.0, "pause", 1.0)]
    assert [a[3] for a in fault_actions(back_to_back)] == ["start", "stop", "start", "stop"]


def P(
    partition: int, leader: int, replicas: tuple[int, ...], isr: tuple[int, ...] | None = None
) -> PartitionState:
    return PartitionState(partition, leader, 1, replicas, replicas if isr is None else isr)


def test_the_unclean_target_keeps_the_controller_out_of_the_cut() -> None:
    parts = [P(0, 1, (1, 2)), P(1, 2, (2, 3)), P(2, 3, (3, 1))]
    assert choose_unclean_target(parts, 3) == parts[0]  # 3 holds no replica of partition 0
    assert choose_unclean_target(parts, 1) == parts[1]
    # without a controller-free partition: one whose followers exclude the controller
    assert choose_unclean_target([P(0, 1, (1, 2)), P(1, 2, (2, 1))], 1) == P(0, 1, (1, 2))
    # only in-sync, led partitions with followers qualify
    assert choose_unclean_target([P(0, -1, (1, 2)), P(1, 2, (2, 3), (2,))], 1) is None
    assert choose_unclean_target([P(0, 1, (1,))], 3) is None
    assert choose_unclean_target(parts, None) == parts[0]


# ---- nemeses and the nemesis thread against a fake cluster ----------------------------------


@dataclass
class FakeCluster:
    node_ids: tuple[int, ...] = (1, 2, 3)
    grudges: list[dict[int, frozenset[int]]] = field(default_factory=list)
    heals: int = 0
    down: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def partition(self, groups: object) -> None:
        self.log.append("partition")

    def apply_grudge(self, grudge: Mapping[int, Set[int]]) -> None:
        self.grudges.append({n: frozenset(g) for n, g in grudge.items()})
        self.log.append("grudge")

    def heal(self) -> None:
        self.heals += 1
        self.log.append("heal")

    def kill(self, node: int) -> None:
        self.down.add(node)
        self.log.append(f"kill {node}")

    def start(self, node: int) -> int:
        self.down.discard(node)
        self.log.append(f"start {node}")
        return 1000 + node

    def pause(self, node: int) -> None:
        self.paused.add(node)
        self.log.append(f"pause {node}")

    def resume(self, node: int) -> None:
        self.paused.discard(node)
        self.log.append(f"resume {node}")

    def is_running(self, node: int) -> bool:
        return node not in self.down

    def is_paused(self, node: int) -> bool:
        return node in self.paused


def context(now: list[float], controller: int | None = 3) -> NemesisContext:
    return NemesisContext(now_s=lambda: now[0], controller=lambda: controller)


def test_the_scenario_cuts_only_leader_and_followers_then_kills_that_leader() -> None:
    cluster = FakeCluster()
    now = [5.0]
    parts = [P(0, 1, (1, 2)), P(1, 2, (2, 3)), P(2, 3, (3, 1))]
    steps = scenario_nemeses(lambda: parts)
    cut, kill = steps[CUT_STEP], steps[KILL_STEP]
    rng = random.Random(0)
    record = cut.start(cluster, rng, context(now))  # type: ignore[arg-type]
    assert record is not None and record.nodes == (1,) and "controller 3" in record.detail
    assert cluster.grudges == [{1: frozenset({2}), 2: frozenset({1})}]  # 3 sees everyone
    now[0] = 17.0
    killed = kill.start(cluster, rng, context(now))  # type: ignore[arg-type]
    assert killed is not None and killed.nodes == (1,) and cluster.down == {1}
    now[0] = 17.5
    healed = cut.stop(cluster, context(now))  # type: ignore[arg-type]
    assert healed is not None and healed.stop_s == 17.5 and cluster.heals == 1
    now[0] = 26.5
    back = kill.stop(cluster, context(now))  # type: ignore[arg-type]
    assert back is not None and back.stop_s == 26.5 and cluster.down == set()
    assert cluster.log == ["grudge", "kill 1", "heal", "start 1"]
    # final heals are safe at any time and restart whatever is down
    cluster.down.add(2)
    assert kill.final_heal(cluster, context(now)) is None  # type: ignore[arg-type]
    assert cluster.down == set()


def test_the_scenario_does_nothing_without_a_target() -> None:
    cluster = FakeCluster()
    steps = scenario_nemeses(lambda: [P(0, -1, (1, 2))])
    now = [1.0]
    assert steps[CUT_STEP].start(cluster, random.Random(0), context(now)) is None  # type: ignore[arg-type]
    assert steps[KILL_STEP].start(cluster, random.Random(0), context(now)) is None  # type: ignore[arg-type]
    assert cluster.log == []


def test_the_nemesis_thread_follows_the_plan_into_the_fault_log() -> None:
    from raftlog.chaos.nemesis import make_nemesis

    cluster = FakeCluster()
    t0 = time.monotonic()
    ctx = NemesisContext(now_s=lambda: time.monotonic() - t0)
    events = [
        ScheduledFault(0.01, "kill", 0.05),
        ScheduledFault(0.1, "pause", 0.05),
        ScheduledFault(0.2, "isolate-leaders", 0.05),  # no leaders known: skipped
    ]
    nemeses = {name: make_nemesis(name) for name in ("kill", "pause", "isolate-leaders")}
    faults = FaultLog()
    stop = threading.Event()
    thread = NemesisThread(cluster, nemeses, events, random.Random(1), ctx, faults, stop)  # type: ignore[arg-type]
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    done = faults.done
    assert [f.name for f in done] == ["kill", "pause"]
    assert all(f.stop_s is not None and f.stop_s > f.start_s for f in done)
    assert faults.active == ()
    assert len(faults.errors) == 1 and "isolate-leaders" in faults.errors[0]
    assert cluster.down == set() and cluster.paused == set()  # every fault healed by its stop


def test_a_stopped_nemesis_thread_leaves_at_once() -> None:
    cluster = FakeCluster()
    stop = threading.Event()
    stop.set()
    ctx = NemesisContext(now_s=lambda: 0.0)
    from raftlog.chaos.nemesis import make_nemesis

    thread = NemesisThread(
        cluster,  # type: ignore[arg-type]
        {"kill": make_nemesis("kill")},
        [ScheduledFault(100.0, "kill", 5.0)],
        random.Random(0),
        ctx,
        FaultLog(),
        stop,
    )
    started = time.monotonic()
    thread.start()
    thread.join(5)
    assert time.monotonic() - started < 2 and cluster.log == []


# ---- schedule → history → checker → report ----------------------------------------------------


def simulated_history(*, lose: bool) -> list[Op]:
    """Two producers, one consumer, a leader drain and a node drain; with ``lose`` the last ack
    to t-0 is missing from both drains (written over by another value, as after an unclean
    election)."""
    h = HistoryBuilder()
    t = 0.0

    def at() -> float:
        nonlocal t
        t += 10.0
        return t

    log: list[tuple[int, int]] = []
    for value in range(6):
        process = value % 2
        op = h.invoke(process, OpF.SEND, send_value("t-0", value), time_ms=at())
        h.complete(op, OpType.OK, send_value("t-0", value, len(log)), time_ms=at())
        log.append((len(log), value))
    failed = h.invoke(0, OpF.SEND, send_value("t-0", 99), time_ms=at())
    h.complete(failed, OpType.FAIL, error="NOT_ENOUGH_REPLICAS: x", time_ms=at())
    poll = h.invoke(2, OpF.POLL, time_ms=at())
    h.complete(poll, OpType.OK, read_value({"t-0": log[:3]}, {"t-0": 0}), time_ms=at())
    final = list(log)
    if lose:
        final[5] = (5, 1000)
        extra = h.invoke(1, OpF.SEND, send_value("t-0", 1000), time_ms=at())
        h.complete(extra, OpType.INFO, error="NOT_LEADER_OR_FOLLOWER", time_ms=at())
        final.append((6, 1001))
        late = h.invoke(1, OpF.SEND, send_value("t-0", 1001), time_ms=at())
        h.complete(late, OpType.OK, send_value("t-0", 1001, 6), time_ms=at())
    drain = h.invoke(3, OpF.DRAIN, time_ms=at())
    h.complete(drain, OpType.OK, read_value({"t-0": final}, {"t-0": 0}), time_ms=at())
    node = h.invoke(4, OpF.DRAIN, node=2, time_ms=at())
    h.complete(node, OpType.OK, read_value({"t-0": final}, {"t-0": 0}), time_ms=at())
    return list(h.ops)


def test_a_clean_simulated_run_is_valid_and_its_figures_add_up() -> None:
    ops = simulated_history(lose=False)
    assert check(ops).valid
    assert acked_not_in_final_log(ops) == {"count": 0, "examples": [], "keys_not_drained": []}
    figures = run_figures(ops)
    assert (figures["sends"], figures["sends_ok"], figures["sends_fail"]) == (7, 6, 1)
    assert figures["ack_latency_ms"]["p50"] == 10.0
    assert figures["send_errors"] == {"NOT_ENOUGH_REPLICAS": 1}
    assert figures["polls_ok"] == 1 and figures["consumer_truncations"] == 0


def test_a_lost_acknowledged_write_is_reported_everywhere() -> None:
    ops = simulated_history(lose=True)
    result = check(ops)
    assert not result.valid and result[Kind.LOST_WRITE].count == 1
    assert result[Kind.INCONSISTENT_OFFSETS].count == 1  # offset 5 acked as 5, drained as 1000
    missing = acked_not_in_final_log(ops)
    assert missing["count"] == 1 and missing["examples"][0]["value"] == 5


def test_the_timeline_buckets_outcomes_per_second() -> None:
    h = HistoryBuilder()
    for i, (start, end, outcome) in enumerate(
        [(100.0, 150.0, OpType.OK), (900.0, 1200.0, OpType.INFO), (1300.0, 1310.0, OpType.FAIL)]
    ):
        op = h.invoke(i, OpF.SEND, send_value("t-0", i), time_ms=start)
        h.complete(
            op, outcome, send_value("t-0", i, 0 if outcome is OpType.OK else None), time_ms=end
        )
    poll = h.invoke(9, OpF.POLL, time_ms=2000.0)
    h.complete(poll, OpType.OK, read_value({"t-0": [(0, 0)]}), time_ms=2500.0)
    timeline = timeline_from_history(list(h.ops))
    assert timeline.ok == (1, 0, 0) and timeline.info == (0, 1, 0) and timeline.fail == (0, 1, 0)
    assert timeline.read == (0, 0, 1)
    assert [(round(t, 2), lat, o) for t, lat, o in timeline.latencies] == [
        (0.15, 50.0, "ok"),
        (1.2, 300.0, "info"),
        (1.31, 10.0, "fail"),
    ]


def test_the_timeline_picture_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ops = simulated_history(lose=False)
    faults = [
        FaultRecord("kill", 0.01, 0.05, (1,), "SIGKILL 1"),
        FaultRecord("partition-halves", 0.06, None, (2,), "2 | 1,3"),
    ]
    path = tmp_path / "timeline.png"
    marks = [(0.05, 0.07, "no ack after a heal"), (0.08, 0.09, "silence, no fault")]
    timeline = timeline_from_history(ops)
    assert write_timeline_png(timeline, faults, path, title="t", marks=marks) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_timeline_picture_is_skipped_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    path = tmp_path / "timeline.png"
    timeline = timeline_from_history(simulated_history(lose=False))
    note = write_timeline_png(timeline, [], path, title="t")
    assert note == "the timeline PNG needs matplotlib: pip install 'raftlog[chaos]'"
    assert not path.exists()


def test_the_live_view_shows_counters_faults_and_nodes() -> None:
    snapshot = LiveSnapshot(
        elapsed_s=12.5,
        time_limit_s=60,
        phase="running",
        sends_ok=1234,
        sends_fail=5,
        sends_info=7,
        sends_per_s=98.0,
        polls_ok=300,
        records_read=1200,
        truncations=1,
        errors=(("REQUEST_TIMED_OUT", 7),),
        active_faults=(FaultRecord("kill", 10.0, None, (2,), "SIGKILL 2"),),
        faults_done=3,
        nodes=((1, "up"), (2, "down"), (3, "paused")),
        seed=42,
    )
    console = Console(record=True, width=120)
    console.print(render_live(snapshot))
    text = console.export_text()
    for expected in (
        "seed 42",
        "running",
        "1,234",
        "98",
        "kill",
        "SIGKILL 2",
        "2:down",
        "3:paused",
        "REQUEST_TIMED_OUT ×7",
        "consumer truncations",
    ):
        assert expected in text, expected


# ---- the command line ---------------------------------------------------------------------------


def test_the_replay_command_parses_back_to_the_same_run() -> None:
    config = RunConfig(
        nodes=5,
        nemeses=("partition", "kill"),
        time_limit_s=90,
        rate_per_s=50,
        seed=77,
        unsafe=True,
        partitions=4,
        fault_interval_s=(2, 3),
        fault_duration_s=(4, 5.5),
    )
    args = chaos_parser().parse_args(shlex.split(config.command_line())[2:])
    assert (args.nodes, args.nemesis, args.time_limit, args.rate, args.seed) == (
        5,
        "partition,kill",
        90,
        50,
        77,
    )
    assert args.unsafe and args.partitions == 4
    assert args.fault_interval == (2, 3) and args.fault_duration == (4, 5.5)
    assert args.producer == "once" and args.drop_produce_responses == 0.0
    retrying = RunConfig(producer_mode="idempotent", drop_produce_responses=0.25)
    args = chaos_parser().parse_args(shlex.split(retrying.command_line())[2:])
    assert args.producer == "idempotent" and args.drop_produce_responses == 0.25


def test_chaos_check_re_checks_a_run_folder(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, lose in ((good, False), (bad, True)):
        folder.mkdir()
        dump_jsonl(simulated_history(lose=lose), folder / "history.jsonl")
    console = Console(record=True, width=120)
    assert chaos_main(["check", str(good)], console) == 0
    assert chaos_main(["check", str(bad / "history.jsonl")], console) == 1
    assert "lost-write" in console.export_text()
    assert chaos_main(["check", str(tmp_path / "missing")], console) == 2
    console = Console(record=True, width=200)
    assert chaos_main(["check", "--json", str(bad)], console) == 1
    assert json.loads(console.export_text())["bad"] == ["lost-write", "inconsistent-offsets"]


def test_chaos_run_refuses_bad_usage_before_building_anything(tmp_path: Path) -> None:
    console = Console(record=True)
    assert chaos_main(["run", "--nodes", "4"], console) == 2
    assert chaos_main(["run", "--nemesis", "flood", "--out", str(tmp_path)], console) == 2
    assert chaos_main(["run", "--nemesis", UNCLEAN_SCENARIO, "--time-limit", "10"], console) == 2
    assert chaos_main(["--help"], console) == 0
    assert list(tmp_path.iterdir()) == []


def test_the_client_cli_routes_chaos_lazily() -> None:
    probe = (
        "import sys, raftlog.client.cli as cli\n"
        "assert not any(m.startswith('raftlog.chaos') for m in sys.modules), 'imported early'\n"
        "code = cli.main(['chaos', '--help'])\n"
        "assert code == 0, code\n"
        "assert 'raftlog.chaos.cli' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "raftlog chaos" in done.stdout and "check" in done.stdout


# ---- the node drain: a replica's log read from disk ---------------------------------------------


def test_a_node_drain_reads_a_replica_log_whole_from_a_copy(tmp_path: Path) -> None:
    from raftlog.chaos.drain import drain_node, read_node_log
    from raftlog.segments import BrokerStateStore, Log, LogConfig, build_batch

    data_dir = tmp_path / "node2"
    (data_dir / "logs").mkdir(parents=True)
    with BrokerStateStore(str(data_dir / "state")) as store:
        store.save_offsets("hw", {"t-0": 3})
        config = LogConfig(segment_bytes=1024)  # several segments
        with Log(
            str(data_dir / "logs" / "t-0"), config, state=store, name="t-0", clock=SYSTEM_CLOCK
        ) as log:
            for value in range(40):
                batch = build_batch([str(value).encode()], keys=[b"t-0"], timestamp_ms=1)
                log.append(batch, leader_epoch=1 + value // 20, now_ms=1)
            assert log.segment_count > 1
    before = sorted(p.name for p in (data_dir / "logs" / "t-0").iterdir())
    found = read_node_log(data_dir, 2, "t", 0)
    assert found is not None and found.error is None
    assert found.records == tuple((i, i) for i in range(40))
    assert (found.log_start_offset, found.log_end_offset, found.high_watermark) == (0, 40, 3)
    assert sorted(p.name for p in (data_dir / "logs" / "t-0").iterdir()) == before  # untouched
    assert read_node_log(data_dir, 2, "t", 1) is None  # not a replica of t-1

    recorder = Recorder(FakeClock())
    assert drain_node(recorder, 9, data_dir, 2, "t", 1) is None
    drain_node(recorder, 9, data_dir, 2, "t", 0)
    invoke, done = recorder.ops
    assert invoke.node == done.node == 2 and done.type is OpType.OK
    assert done.value["start"] == {"t-0": 0} and len(done.value["records"]["t-0"]) == 40


def corrupt_log(tmp_path: Path, *, segment_bytes: int) -> Path:
    """node1's t-0 with 30 records; the last byte of the first segment flipped."""
    from raftlog.segments import Log, LogConfig, build_batch

    directory = tmp_path / "node1" / "logs" / "t-0"
    with Log(
        str(directory), LogConfig(segment_bytes=segment_bytes), name="t-0", clock=SYSTEM_CLOCK
    ) as log:
        for value in range(30):
            log.append(build_batch([str(value).encode()], timestamp_ms=1), leader_epoch=0)
    segment = sorted(directory.glob("*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    return tmp_path / "node1"


def test_a_corrupt_replica_log_is_reported_not_hidden(tmp_path: Path) -> None:
    from raftlog.chaos.drain import drain_node

    recorder = Recorder(FakeClock())
    found = drain_node(recorder, 9, corrupt_log(tmp_path, segment_bytes=1024), 1, "t", 0)
    assert found is not None and found.error is not None and "Corrupt" in found.error
    assert 0 < len(found.records) < 30  # what was read before the bad batch is kept
    done = recorder.ops[-1]
    assert done.type is OpType.INFO and done.error is not None and done.error.startswith("NODE_LOG")


def test_a_torn_tail_cut_by_recovery_is_reported(tmp_path: Path) -> None:
    from raftlog.chaos.drain import read_node_log

    node = corrupt_log(tmp_path, segment_bytes=1 << 20)
    segment = sorted((node / "logs" / "t-0").glob("*.log"))[0]
    os.truncate(segment, segment.stat().st_size - 5)  # the last batch torn, not flipped
    found = read_node_log(node, 1, "t", 0)
    assert found is not None and found.error is None
    assert found.tail_bytes_cut > 0 and found.log_end_offset == 29
    # a complete last batch whose CRC fails is damage, not a torn tail: reported
    damaged = read_node_log(corrupt_log(tmp_path / "b", segment_bytes=1 << 20), 1, "t", 0)
    assert damaged is not None and damaged.error is not None and "damaged" in damaged.error


def test_every_partition_has_workers_of_its_own() -> None:
    """Seed-4242 run: workers picking any partition were all caught, within a second, retrying
    sends to the one partition a majorities ring left without a leader, and the two partitions
    that kept serving were not written for 8 s (nor measured)."""
    assert [partitions_of_worker(w, 4, 3) for w in range(4)] == [(0,), (1,), (2,), (0,)]
    assert [partitions_of_worker(w, 2, 3) for w in range(2)] == [(0, 2), (1,)]
    assert partitions_of_worker(0, 1, 3) == (0, 1, 2)
