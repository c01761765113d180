"""The history checker against histories with each anomaly injected, one at a time.

Each hand-built test injects one anomaly into an otherwise clean history and asserts that exactly
that kind (where that is meaningful) is found, with an example that names the key, offset, value
and op indexes. A hypothesis test simulates a correct log, checks that its random history is
valid, then injects one random anomaly and checks that its kind is reported.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from raftlog.chaos.anomalies import BAD_KINDS, CheckResult, Kind, render_summary
from raftlog.chaos.checker import check
from raftlog.chaos.history import (
    HistoryBuilder,
    HistoryFormatError,
    Op,
    OpF,
    OpType,
    assign_value,
    dump_jsonl,
    load_jsonl,
    read_value,
    send_value,
)

K0, K1 = "t-0", "t-1"
Records = Mapping[str, Sequence[tuple[int, int | str]]]


class History:
    """A small DSL over HistoryBuilder: each call records an invocation and its completion."""

    def __init__(self) -> None:
        self.builder = HistoryBuilder()

    @property
    def ops(self) -> tuple[Op, ...]:
        return self.builder.ops

    def send(
        self, process: int, key: str, value: int, offset: int | None, outcome: OpType = OpType.OK
    ) -> Op:
        invocation = self.builder.invoke(process, OpF.SEND, send_value(key, value))
        return self.complete_send(invocation, offset, outcome)

    def invoke_send(self, process: int, key: str, value: int) -> Op:
        return self.builder.invoke(process, OpF.SEND, send_value(key, value))

    def complete_send(self, invocation: Op, offset: int | None, outcome: OpType = OpType.OK) -> Op:
        key, value = invocation.value["key"], invocation.value["value"]
        body = send_value(key, value, offset if outcome is OpType.OK else None)
        error = None if outcome is OpType.OK else "NOT_ENOUGH_REPLICAS"
        return self.builder.complete(invocation, outcome, body, error=error)

    def poll(self, process: int, records: Records, start: Mapping[str, int] | None = None) -> Op:
        invocation = self.builder.invoke(process, OpF.POLL)
        return self.builder.complete(invocation, OpType.OK, _read(records, start))

    def assign(self, process: int, positions: Mapping[str, int] | None = None) -> Op:
        keys = list(positions or [K0, K1])
        invocation = self.builder.invoke(process, OpF.ASSIGN, assign_value(keys))
        return self.builder.complete(invocation, OpType.OK, assign_value(keys, positions))

    def drain(self, process: int, records: Records, node: int | None = None) -> Op:
        invocation = self.builder.invoke(process, OpF.DRAIN, node=node)
        start = dict.fromkeys(records, 0)
        return self.builder.complete(invocation, OpType.OK, _read(records, start))

    def check(self) -> CheckResult:
        return check(self.ops)


def _read(records: Records, start: Mapping[str, int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"records": {k: [[o, v] for o, v in rs] for k, rs in records.items()}}
    if start is not None:
        out["start"] = dict(start)
    return out


def found(result: CheckResult) -> set[Kind]:
    """Every kind with at least one case, bad or merely reported."""
    return {kind for kind, anomaly in result.anomalies.items() if anomaly.count}


def examples(result: CheckResult, kind: Kind) -> list[dict[str, Any]]:
    return [dict(e) for e in result[kind].examples]


# -- a clean history ---------------------------------------------------------------------------


def clean_history() -> History:
    """Three producers, two consumers polling consecutively, a failed and two indefinite sends,
    a drain through the leader and one per node (node 3 lagging behind, which is allowed)."""
    h = History()
    log: dict[str, list[int]] = {K0: [], K1: []}
    value = 0
    for round_ in range(4):
        for producer, key in ((0, K0), (1, K1), (2, K0)):
            h.send(producer, key, value, len(log[key]))
            log[key].append(value)
            value += 1
        if round_ == 1:
            h.send(1, K1, 100, None, OpType.FAIL)  # definitely not written
            h.send(2, K0, 101, None, OpType.INFO)  # timed out, never written
            invocation = h.invoke_send(0, K1, 102)  # timed out, but written
            log[K1].append(102)
            h.complete_send(invocation, None, OpType.INFO)
    h.assign(10, {K0: 0, K1: 0})
    h.assign(11, {K0: 3})
    for consumer, key, begin, end in (
        (10, K0, 0, 3),
        (10, K1, 0, 2),
        (11, K0, 3, 5),
        (10, K0, 3, 8),
        (10, K1, 2, 5),
        (11, K0, 5, 8),
    ):
        records = {key: list(enumerate(log[key]))[begin:end]}
        h.poll(consumer, records, start={key: begin})
    h.poll(10, {K0: [], K1: []}, start={K0: 8, K1: 5})  # caught up: nothing new
    everything = {key: list(enumerate(values)) for key, values in log.items()}
    h.drain(20, everything)
    h.drain(21, everything, node=1)
    h.drain(21, everything, node=2)
    h.drain(21, {key: records[:2] for key, records in everything.items()}, node=3)
    return h


def test_clean_history_is_valid() -> None:
    result = clean_history().check()
    assert result.valid, result.to_json()
    assert found(result) == set()
    s = result.summary
    assert (s.sends_attempted, s.sends_ok, s.sends_fail, s.sends_info) == (15, 12, 1, 2)
    assert s.sends_unfinished == 0
    assert (s.polls_ok, s.drains_ok, s.keys, s.malformed) == (7, 4, 2, 0)
    assert s.values_read == 13  # the 12 acked values and the indefinite one that was written
    assert s.nodes_drained == (1, 2, 3)


def test_bad_kinds_are_every_kind_but_the_explained_one() -> None:
    assert set(Kind) - BAD_KINDS == {Kind.UNSEEN_UNDRAINED}


# -- one test per anomaly ----------------------------------------------------------------------


def test_lost_write_is_split_by_position_among_its_writers_writes() -> None:
    h = History()
    sends = [h.send(0, K0, v, v) for v in range(5)]  # producer 0 writes offsets 0..4
    h.send(1, K0, 5, 5)
    # Consumers that start where they are told read 1, 3 and 5: the rest was read by nobody,
    # although reads reached past it.
    for position in (1, 3, 5):
        h.assign(10, {K0: position})
        h.poll(10, {K0: [(position, position)]}, start={K0: position})
    result = h.check()
    assert found(result) == {Kind.LOST_WRITE}
    assert not result.valid
    lost = result[Kind.LOST_WRITE]
    assert lost.count == 3
    assert dict(lost.breakdown) == {"prefix": 1, "middle": 1, "postfix": 1}
    assert [
        (e["offset"], e["value"], e["position"]) for e in examples(result, Kind.LOST_WRITE)
    ] == [
        (0, 0, "prefix"),
        (2, 2, "middle"),
        (4, 4, "postfix"),
    ]
    first = examples(result, Kind.LOST_WRITE)[0]
    assert first["key"] == K0 and first["send_op"] == sends[0].index and first["process"] == 0
    assert first["read_past"] == {"offset": 5, "op": h.ops[-1].index}


def test_unseen_after_a_drain_is_bad() -> None:
    h = History()
    h.send(0, K0, 0, 0)
    ack = h.send(0, K0, 1, 1)
    drain = h.drain(20, {K0: [(0, 0)]})  # a complete read that ends before offset 1
    result = h.check()
    assert found(result) == {Kind.UNSEEN}
    assert not result.valid
    assert examples(result, Kind.UNSEEN) == [
        {"key": K0, "offset": 1, "value": 1, "send_op": ack.index, "drain_op": drain.index}
    ]


def test_unseen_without_a_later_drain_is_reported_but_valid() -> None:
    h = History()
    h.send(0, K0, 0, 0)
    drain_invocation = h.builder.invoke(20, OpF.DRAIN)  # began before the ack below
    ack = h.send(0, K0, 1, 1)
    h.builder.complete(drain_invocation, OpType.OK, _read({K0: [(0, 0)]}, {K0: 0}))
    h.send(0, K0, 2, 2)  # acked after every read, and never drained
    result = h.check()
    assert found(result) == {Kind.UNSEEN_UNDRAINED}
    assert result.valid
    assert [e["value"] for e in examples(result, Kind.UNSEEN_UNDRAINED)] == [1, 2]
    assert examples(result, Kind.UNSEEN_UNDRAINED)[0]["send_op"] == ack.index


def test_inconsistent_offsets_between_two_consumers() -> None:
    h = History()
    h.send(0, K0, 7, None, OpType.INFO)
    h.send(1, K0, 8, None, OpType.INFO)
    first = h.poll(10, {K0: [(0, 7)]})
    second = h.poll(11, {K0: [(0, 8)]})
    result = h.check()
    assert found(result) == {Kind.INCONSISTENT_OFFSETS}
    assert examples(result, Kind.INCONSISTENT_OFFSETS) == [
        {
            "key": K0,
            "offset": 0,
            "values": [
                {"value": 7, "op": first.index, "node": None},
                {"value": 8, "op": second.index, "node": None},
            ],
        }
    ]


def test_inconsistent_offsets_between_an_ack_and_a_read() -> None:
    h = History()
    ack = h.send(0, K0, 7, 0)
    h.send(1, K0, 8, None, OpType.INFO)
    h.poll(10, {K0: [(0, 8)]})
    result = h.check()
    assert result[Kind.INCONSISTENT_OFFSETS].count == 1
    assert examples(result, Kind.INCONSISTENT_OFFSETS)[0]["values"] == [
        {"value": 7, "op": ack.index, "node": None},
        {"value": 8, "op": h.ops[-1].index, "node": None},
    ]
    # The acked value was overwritten and never read; the read did not reach past it.
    assert result.bad_kinds == (Kind.INCONSISTENT_OFFSETS,)


def test_duplicate_within_a_key() -> None:
    h = History()
    h.send(0, K0, 7, None, OpType.INFO)  # the client retried; the retry was stored again
    poll = h.poll(10, {K0: [(0, 7), (1, 7)]})
    result = h.check()
    assert found(result) == {Kind.DUPLICATE}
    assert examples(result, Kind.DUPLICATE) == [
        {
            "value": 7,
            "node": None,
            "positions": [
                {"key": K0, "offset": 0, "op": poll.index},
                {"key": K0, "offset": 1, "op": poll.index},
            ],
        }
    ]


def test_duplicate_across_keys_and_against_the_ack() -> None:
    h = History()
    h.send(0, K0, 7, 0)
    h.poll(10, {K0: [(0, 7)], K1: [(0, 7)]})
    result = h.check()
    assert found(result) == {Kind.DUPLICATE}
    positions = examples(result, Kind.DUPLICATE)[0]["positions"]
    assert [(p["key"], p["offset"]) for p in positions] == [(K0, 0), (K1, 0)]


def test_duplicate_within_one_nodes_log() -> None:
    h = History()
    h.send(0, K0, 7, 0)
    h.drain(20, {K0: [(0, 7)]})
    h.drain(21, {K0: [(0, 7), (1, 7)]}, node=2)
    result = h.check()
    assert found(result) == {Kind.DUPLICATE}
    assert examples(result, Kind.DUPLICATE)[0]["node"] == 2


def test_aborted_read() -> None:
    h = History()
    fail = h.send(0, K0, 7, None, OpType.FAIL)
    poll = h.poll(10, {K0: [(0, 7)]})
    result = h.check()
    assert found(result) == {Kind.ABORTED_READ}
    assert examples(result, Kind.ABORTED_READ) == [
        {
            "key": K0,
            "offset": 0,
            "value": 7,
            "read_op": poll.index,
            "node": None,
            "fail_op": fail.index,
        }
    ]


def test_a_failed_send_retried_indefinitely_is_not_an_aborted_read() -> None:
    h = History()
    h.send(0, K0, 7, None, OpType.FAIL)
    h.send(0, K0, 7, None, OpType.INFO)  # the same value again: maybe written this time
    h.poll(10, {K0: [(0, 7)]})
    assert h.check().valid


def test_a_failed_send_that_may_also_have_succeeded_is_not_an_aborted_read() -> None:
    """A history recorded from mid-flight: an info completion whose invocation is missing, then
    a retry of the same value that failed. The first attempt may have written it."""
    orphan = Op(0, 0.0, 0, OpType.INFO, OpF.SEND, send_value(K0, 7))
    h = History()
    h.send(0, K0, 7, None, OpType.FAIL)
    h.poll(10, {K0: [(0, 7)]})
    assert check([orphan, *(replace(op, index=op.index + 1) for op in h.ops)]).valid


def test_unexpected_value_never_sent() -> None:
    h = History()
    h.send(0, K0, 7, 0)
    poll = h.poll(10, {K0: [(0, 7), (1, 999)]})
    result = h.check()
    assert found(result) == {Kind.UNEXPECTED}
    assert examples(result, Kind.UNEXPECTED) == [
        {
            "key": K0,
            "offset": 1,
            "value": 999,
            "read_op": poll.index,
            "node": None,
            "reason": "never sent",
        }
    ]
    assert dict(result[Kind.UNEXPECTED].breakdown) == {"never sent": 1}


def test_unexpected_value_read_in_a_key_it_was_not_sent_to() -> None:
    h = History()
    h.send(0, K0, 7, None, OpType.INFO)
    h.poll(10, {K1: [(0, 7)]})
    result = h.check()
    assert found(result) == {Kind.UNEXPECTED}
    assert examples(result, Kind.UNEXPECTED)[0]["reason"] == f"sent to key {K0}"


def _three_acked(h: History) -> None:
    for v in range(3):
        h.send(0, K0, v, v)


def test_poll_skip_between_polls() -> None:
    h = History()
    _three_acked(h)
    first = h.poll(10, {K0: [(0, 0)]})
    second = h.poll(10, {K0: [(2, 2)]})  # offset 1 exists: another consumer read it
    h.poll(11, {K0: [(0, 0), (1, 1), (2, 2)]})
    result = h.check()
    assert found(result) == {Kind.POLL_SKIP}
    assert examples(result, Kind.POLL_SKIP) == [
        {
            "process": 10,
            "key": K0,
            "prev_offset": 0,
            "offset": 2,
            "skipped": [1],
            "skipped_count": 1,
            "ops": [first.index, second.index],
        }
    ]


def test_poll_skip_inside_one_poll_and_by_start_position() -> None:
    h = History()
    _three_acked(h)
    h.poll(11, {K0: [(0, 0), (1, 1), (2, 2)]})
    h.poll(10, {K0: [(0, 0), (2, 2)]})  # inside one poll
    h.assign(12, {K0: 0})
    h.poll(12, {K0: []}, start={K0: 2})  # its position moved past 0 and 1
    result = h.check()
    assert found(result) == {Kind.POLL_SKIP}
    assert [(e["process"], e["skipped"]) for e in examples(result, Kind.POLL_SKIP)] == [
        (10, [1]),
        (12, [0, 1]),
    ]


def test_gaps_over_offsets_nobody_saw_and_assigns_are_not_skips() -> None:
    h = History()
    h.send(0, K0, 0, 0)
    h.send(0, K0, 2, 2)  # offset 1 holds nothing we know of (a control batch, say)
    h.poll(10, {K0: [(0, 0)]})
    h.poll(10, {K0: [(2, 2)]})
    h.send(0, K0, 3, 3)
    h.send(0, K0, 4, 4)
    h.poll(11, {K0: [(3, 3)]})
    h.assign(11, {K0: 4})  # a seek: tracking restarts at the new position
    h.poll(11, {K0: [(4, 4)]})
    h.poll(12, {K0: [(2, 2)]})
    h.assign(12)  # no positions: tracking simply restarts
    h.poll(12, {K0: [(4, 4)]})
    h.poll(13, {K0: [(3, 3)]})
    assert h.check().valid
    assert found(h.check()) == set()


def test_a_poll_that_timed_out_or_a_drain_restarts_tracking() -> None:
    h = History()
    _three_acked(h)
    h.poll(10, {K0: [(0, 0)]})
    lost_poll = h.builder.invoke(10, OpF.POLL)
    h.builder.complete(lost_poll, OpType.INFO, error="DEADLINE_EXCEEDED")  # it read offset 1
    h.poll(10, {K0: [(2, 2)]})
    h.poll(11, {K0: [(0, 0), (1, 1), (2, 2)]})
    h.drain(11, {K0: [(0, 0), (1, 1), (2, 2)]})  # the same process, reading from the start
    h.poll(11, {K0: [(0, 0)]})
    assert found(h.check()) == set()


def test_nonmonotonic_poll() -> None:
    h = History()
    _three_acked(h)
    first = h.poll(10, {K0: [(0, 0), (1, 1)]})
    second = h.poll(10, {K0: [(1, 1), (2, 2)]})  # starts where the last one ended
    result = h.check()
    assert found(result) == {Kind.NONMONOTONIC_POLL}
    assert examples(result, Kind.NONMONOTONIC_POLL) == [
        {
            "process": 10,
            "key": K0,
            "prev_offset": 1,
            "offset": 1,
            "ops": [first.index, second.index],
        }
    ]


def test_nonmonotonic_poll_by_start_position_and_rereads_after_assign() -> None:
    h = History()
    _three_acked(h)
    h.poll(10, {K0: [(0, 0), (1, 1), (2, 2)]})
    h.poll(10, {}, start={K0: 1})  # its position went back, though nothing came back
    h.assign(11, {K0: 0})
    h.poll(11, {K0: [(0, 0), (1, 1)]})
    h.assign(11, {K0: 0})
    h.poll(11, {K0: [(0, 0), (1, 1), (2, 2)]})  # a re-read after a seek is fine
    result = h.check()
    assert found(result) == {Kind.NONMONOTONIC_POLL}
    assert [
        (e["process"], e["prev_offset"], e["offset"])
        for e in examples(result, Kind.NONMONOTONIC_POLL)
    ] == [(10, 2, 1)]


def test_nonmonotonic_send() -> None:
    h = History()
    earlier = h.send(0, K0, 7, 1)
    later = h.send(0, K0, 8, 0)  # invoked after 7 was acked, yet landed before it
    h.poll(10, {K0: [(0, 8), (1, 7)]})
    result = h.check()
    assert found(result) == {Kind.NONMONOTONIC_SEND}
    assert examples(result, Kind.NONMONOTONIC_SEND) == [
        {
            "process": 0,
            "key": K0,
            "prev_offset": 1,
            "prev_value": 7,
            "prev_op": earlier.index,
            "offset": 0,
            "value": 8,
            "op": later.index,
        }
    ]


def test_sends_are_ordered_by_invocation_not_completion() -> None:
    h = History()
    first = h.invoke_send(0, K0, 7)
    second = h.invoke_send(0, K0, 8)  # pipelined
    h.complete_send(second, 1)
    h.complete_send(first, 0)
    h.poll(10, {K0: [(0, 7), (1, 8)]})
    assert found(h.check()) == set()


def test_lost_on_node() -> None:
    h = History()
    _three_acked(h)
    everything = {K0: [(0, 0), (1, 1), (2, 2)]}
    h.drain(20, everything)
    h.drain(21, everything, node=1)
    drain = h.drain(21, {K0: [(0, 0), (2, 2)]}, node=2)  # reached offset 2 without offset 1
    h.drain(21, {K0: [(0, 0)]}, node=3)  # behind, but what it has is right
    result = h.check()
    assert found(result) == {Kind.LOST_ON_NODE}
    assert examples(result, Kind.LOST_ON_NODE) == [
        {
            "node": 2,
            "key": K0,
            "offset": 1,
            "value": 1,
            "found": None,
            "drain_op": drain.index,
            "source_op": h.ops[3].index,
        }
    ]


def test_a_value_lost_everywhere_is_a_lost_write_not_lost_on_node() -> None:
    h = History()
    _three_acked(h)
    survivors = {K0: [(0, 0), (2, 2)]}  # offset 1 is gone on every node
    h.drain(20, survivors)
    for node in NODES:
        h.drain(21, survivors, node=node)
    result = h.check()
    assert found(result) == {Kind.LOST_WRITE}
    assert [e["value"] for e in examples(result, Kind.LOST_WRITE)] == [1]


def test_split_brain_is_divergence_not_duplication() -> None:
    h = History()
    _three_acked(h)
    h.send(1, K0, 9, None, OpType.INFO)
    h.drain(20, {K0: [(0, 0), (1, 1), (2, 2)]})
    h.drain(21, {K0: [(0, 0), (1, 9), (2, 1), (3, 2)]}, node=2)  # a diverged replica
    result = h.check()
    assert found(result) == {Kind.LOST_ON_NODE, Kind.INCONSISTENT_OFFSETS}
    assert [(e["offset"], e["value"], e["found"]) for e in examples(result, Kind.LOST_ON_NODE)] == [
        (1, 1, 9),
        (2, 2, 1),
    ]
    nodes = {v["node"] for e in examples(result, Kind.INCONSISTENT_OFFSETS) for v in e["values"]}
    assert nodes == {None, 2}


# -- robustness, encoding, rendering -----------------------------------------------------------


def test_malformed_values_are_skipped_and_counted() -> None:
    b = HistoryBuilder()
    send = b.invoke(0, OpF.SEND, send_value(K0, 1))
    b.complete(send, OpType.OK, {"key": K0, "value": 1})  # ok without an offset
    b.complete(b.invoke(0, OpF.SEND, {}), OpType.INFO, {})  # no value at all
    b.complete(b.invoke(10, OpF.POLL), OpType.OK, {"records": [1, 2]})
    b.complete(b.invoke(10, OpF.POLL), OpType.OK, {"records": {K0: [[0, 1], [1], "x", [None, 3]]}})
    b.complete(b.invoke(10, OpF.POLL), OpType.OK, {})  # nothing read
    b.complete(b.invoke(10, OpF.ASSIGN), OpType.OK, {"positions": "nope"})
    b.complete(b.invoke(20, OpF.DRAIN), OpType.OK, {"records": {K0: [[0, 1]]}, "start": 3})
    b.invoke(0, OpF.SEND, send_value(K0, 2))  # never completed: the run ended
    result = check(b.ops)
    assert result.valid
    assert result.summary.malformed == 7  # 2 sends, 1 records, 3 records entries, 1 start
    assert result.summary.sends_unfinished == 1


def test_check_reads_a_history_that_starts_mid_flight() -> None:
    b = HistoryBuilder()
    orphan = Op(
        index=0, time_ms=0.0, process=0, type=OpType.OK, f=OpF.SEND, value=send_value(K0, 1, 0)
    )
    ops = [orphan, *[replace(op, index=op.index + 1) for op in _one_poll(b, {K0: [(0, 1)]})]]
    assert check(ops).valid


def _one_poll(
    b: HistoryBuilder, records: Mapping[str, Sequence[tuple[int, int]]]
) -> tuple[Op, ...]:
    b.complete(b.invoke(10, OpF.POLL), OpType.OK, read_value(records))
    return b.ops


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ops = (
        *clean_history().ops,
        Op(
            index=999,
            time_ms=1.5,
            process=3,
            type=OpType.INFO,
            f=OpF.SEND,
            value=send_value(K0, 5),
            error="DEADLINE_EXCEEDED",
        ),
    )
    path = tmp_path / "history.jsonl"
    dump_jsonl(ops, path)
    assert load_jsonl(path) == list(ops)
    buffer = io.StringIO()
    dump_jsonl(ops, buffer)
    assert load_jsonl(io.StringIO(buffer.getvalue())) == list(ops)
    assert check(load_jsonl(path)).to_json() == check(ops).to_json()


def test_jsonl_drops_only_a_truncated_last_line(tmp_path: Path) -> None:
    ops = clean_history().ops[:4]
    buffer = io.StringIO()
    dump_jsonl(ops, buffer)
    text = buffer.getvalue()
    assert load_jsonl(io.StringIO(text[:-10])) == list(ops[:3])
    broken = text.replace('"f":"send"', '"f":"teleport"', 1)
    with pytest.raises(HistoryFormatError, match=":1:"):
        load_jsonl(io.StringIO(broken))
    with pytest.raises(HistoryFormatError, match=":2: not JSON"):
        load_jsonl(io.StringIO(text.replace("\n", "\n{oops\n", 1)))


def test_to_json_and_render() -> None:
    h = clean_history()
    h.poll(11, {K0: [(9, 999)]})
    result = h.check()
    as_json = json.loads(json.dumps(result.to_json()))
    assert as_json["valid"] is False
    assert as_json["bad"] == ["unexpected"]  # offset 8 holds nothing known: no poll-skip
    assert as_json["anomalies"]["unexpected"]["examples"][0]["value"] == 999
    assert set(as_json["anomalies"]) == {kind.value for kind in Kind}
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render_summary(result))
    text = console.export_text()
    assert "INVALID" in text and "unexpected" in text and "value=999" in text
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render_summary(clean_history().check()))
    assert "VALID" in console.export_text() and "INVALID" not in console.export_text()


# -- property: a simulated correct log gives a valid history; one injection makes it invalid --

KEYS = (K0, K1, "t-2")
PRODUCERS = (0, 1, 2)
CONSUMERS = (10, 11)
NODES = (1, 2, 3)


@dataclass
class Simulation:
    """A correct single log per key, with producers that may time out and consumers that poll
    consecutively. ``drains_at`` is where the final drains begin in ``ops``."""

    ops: list[Op]
    logs: dict[str, list[int]]
    acked: set[int]
    drains_at: int
    next_value: int = 10_000


@dataclass
class _Pending:
    invocation: Op
    offset: int | None = None  # set once the value is in the log


@dataclass
class _Sim:
    draw: st.DrawFn
    h: History = field(default_factory=History)
    logs: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KEYS})
    acked: set[int] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    positions: dict[int, dict[str, int]] = field(default_factory=dict)
    value: int = 0

    def invoke(self, producer: int) -> None:
        key = self.draw(st.sampled_from(KEYS))
        self.pending[producer] = _Pending(self.h.invoke_send(producer, key, self.value))
        self.value += 1

    def commit(self, producer: int) -> None:
        p = self.pending[producer]
        if p.offset is None:
            log = self.logs[p.invocation.value["key"]]
            p.offset = len(log)
            log.append(p.invocation.value["value"])

    def complete(self, producer: int) -> None:
        p = self.pending.pop(producer)
        if p.offset is None:
            outcome = self.draw(st.sampled_from([OpType.FAIL, OpType.INFO]))
        else:
            outcome = self.draw(st.sampled_from([OpType.OK, OpType.OK, OpType.INFO]))
        if outcome is OpType.OK:
            self.acked.add(p.invocation.value["value"])
        self.h.complete_send(p.invocation, p.offset, outcome)

    def poll(self, consumer: int) -> None:
        position = self.positions[consumer]
        records: dict[str, list[tuple[int, int]]] = {}
        for key in KEYS:
            n = self.draw(st.integers(0, 3))
            begin = position[key]
            records[key] = list(enumerate(self.logs[key]))[begin : begin + n]
            position[key] = begin + len(records[key])
        with_start = self.draw(st.booleans())
        start = {k: position[k] - len(rs) for k, rs in records.items()} if with_start else None
        self.h.poll(consumer, records, start)

    def seek(self, consumer: int) -> None:
        self.positions[consumer] = {
            key: self.draw(st.integers(0, len(self.logs[key]))) for key in KEYS
        }
        self.h.assign(consumer, self.positions[consumer])


@st.composite
def simulations(draw: st.DrawFn) -> Simulation:
    sim = _Sim(draw)
    for key in KEYS:  # three acked values per key first, so every injection has material
        for _ in range(3):
            sim.h.send(0, key, sim.value, len(sim.logs[key]))
            sim.logs[key].append(sim.value)
            sim.acked.add(sim.value)
            sim.value += 1
    for consumer in CONSUMERS:
        sim.positions[consumer] = dict.fromkeys(KEYS, 0)
        sim.h.assign(consumer, sim.positions[consumer])
    for _ in range(draw(st.integers(0, 60))):
        action = draw(st.sampled_from(["invoke", "commit", "complete", "poll", "seek"]))
        idle = [p for p in PRODUCERS if p not in sim.pending]
        busy = sorted(sim.pending)
        match action:
            case "invoke" if idle:
                sim.invoke(draw(st.sampled_from(idle)))
            case "commit" if busy:
                sim.commit(draw(st.sampled_from(busy)))
            case "complete" if busy:
                sim.complete(draw(st.sampled_from(busy)))
            case "poll":
                sim.poll(draw(st.sampled_from(CONSUMERS)))
            case "seek":
                sim.seek(draw(st.sampled_from(CONSUMERS)))
            case _:
                pass
    for producer in sorted(sim.pending):
        if draw(st.booleans()):
            sim.commit(producer)
        sim.complete(producer)
    drains_at = len(sim.h.ops)
    everything = {key: list(enumerate(log)) for key, log in sim.logs.items()}
    sim.h.drain(20, everything)
    for node in NODES:
        lagging = node != NODES[0] and draw(st.booleans())
        cut = {
            k: rs[: draw(st.integers(0, len(rs)))] if lagging else rs
            for k, rs in everything.items()
        }
        sim.h.drain(21, cut, node=node)
    return Simulation(list(sim.h.ops), sim.logs, sim.acked, drains_at)


def _reindex(ops: Sequence[Op]) -> list[Op]:
    return [op if op.index == i else replace(op, index=i) for i, op in enumerate(ops)]


def _map_reads(ops: list[Op], change: Callable[[Op, dict[str, list[list[Any]]]], None]) -> None:
    """Apply ``change`` to a copy of the records of every ok read."""
    for i, op in enumerate(ops):
        if op.type is OpType.OK and op.f in (OpF.POLL, OpF.DRAIN):
            records = {k: [list(r) for r in rs] for k, rs in op.value.get("records", {}).items()}
            change(op, records)
            ops[i] = replace(op, value={**op.value, "records": records})


def _leader_drain(ops: list[Op]) -> tuple[int, dict[str, list[list[Any]]]]:
    i = next(
        i for i, op in enumerate(ops) if op.f is OpF.DRAIN and op.type is OpType.OK and not op.node
    )
    return i, {k: [list(r) for r in rs] for k, rs in ops[i].value["records"].items()}


def _set_records(ops: list[Op], i: int, records: dict[str, list[list[Any]]]) -> None:
    ops[i] = replace(ops[i], value={**ops[i].value, "records": records})


def _sent(process: int, key: str, value: int, offset: int | None, outcome: OpType) -> list[Op]:
    h = History()
    h.send(process, key, value, offset, outcome)
    return list(h.ops)


def inject(kind: Kind, sim: Simulation, data: st.DataObject) -> list[Op]:
    """One anomaly of ``kind`` in a copy of the simulated history."""
    ops = list(sim.ops)
    key = data.draw(st.sampled_from(KEYS))
    log = sim.logs[key]
    fresh = sim.next_value
    match kind:
        case Kind.LOST_WRITE:  # an acked value, not the last, vanishes from every read
            gone = log[data.draw(st.integers(0, 1))]

            def without(_: Op, records: dict[str, list[list[Any]]]) -> None:
                if key in records:
                    records[key] = [r for r in records[key] if r[1] != gone]

            _map_reads(ops, without)
        case Kind.UNSEEN:  # acked just before the final drains, which do not have it
            ops[sim.drains_at : sim.drains_at] = _sent(5, key, fresh, len(log), OpType.OK)
        case Kind.UNSEEN_UNDRAINED:  # acked after every read
            ops += _sent(5, key, fresh, len(log), OpType.OK)
        case Kind.INCONSISTENT_OFFSETS:  # a second value acked at an offset already taken
            ops[sim.drains_at : sim.drains_at] = _sent(5, key, fresh, 0, OpType.OK)
        case Kind.DUPLICATE:  # the leader's log holds its first value twice
            i, records = _leader_drain(ops)
            records[key].append([len(log), log[0]])
            _set_records(ops, i, records)
        case Kind.ABORTED_READ:  # a send that failed is in the log
            i, records = _leader_drain(ops)
            records[key].append([len(log), fresh])
            _set_records(ops, i, records)
            ops[0:0] = _sent(5, key, fresh, None, OpType.FAIL)
        case Kind.UNEXPECTED:  # a value nobody sent is in the log
            i, records = _leader_drain(ops)
            records[key].append([len(log), fresh])
            _set_records(ops, i, records)
        case Kind.POLL_SKIP:  # a consumer that starts at 0 and reads offset 1 first
            h = History()
            h.assign(70, {key: 0})
            h.poll(70, {key: [(1, log[1])]})
            ops += h.ops
        case Kind.NONMONOTONIC_POLL:  # a consumer's poll repeated: it read the same again
            polls = [
                i
                for i, op in enumerate(ops)
                if op.f is OpF.POLL and op.type is OpType.OK and any(op.value["records"].values())
            ]
            if polls:
                i = data.draw(st.sampled_from(polls))
                ops.insert(i + 1, ops[i])
            else:
                h = History()
                h.poll(71, {key: [(0, log[0])]})
                h.poll(71, {key: [(0, log[0])]})
                ops += h.ops
        case Kind.NONMONOTONIC_SEND:  # one producer's second send lands before its first
            end = len(log)
            h = History()
            h.send(72, key, fresh, end + 1)
            h.send(72, key, fresh + 1, end)
            ops[sim.drains_at : sim.drains_at] = h.ops
            i, records = _leader_drain(ops)
            records[key] += [[end, fresh + 1], [end + 1, fresh]]
            _set_records(ops, i, records)
        case Kind.LOST_ON_NODE:  # node 1, which is never behind, lacks offset 0
            i = next(i for i, op in enumerate(ops) if op.node == NODES[0] and op.type is OpType.OK)
            records = {k: [list(r) for r in rs] for k, rs in ops[i].value["records"].items()}
            records[key] = records[key][1:]
            _set_records(ops, i, records)
    return _reindex(ops)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=simulations(), data=st.data())
def test_simulated_correct_log_is_valid_and_each_injection_is_caught(
    sim: Simulation, data: st.DataObject
) -> None:
    result = check(sim.ops)
    assert result.valid, result.to_json()
    assert found(result) == set(), result.to_json()
    assert result.summary.sends_ok == len(sim.acked)

    kind = data.draw(st.sampled_from(list(Kind)))
    broken = check(inject(kind, sim, data))
    assert broken[kind].count >= 1, (kind, broken.to_json())
    assert broken.valid is (kind not in BAD_KINDS)


# -- size ------------------------------------------------------------------------------------


def big_history(values: int, keys: int = 8) -> list[Op]:
    """``values`` acked sends from 4 producers, two consumers polling 10 records at a time, and
    a drain through the leader and of three nodes: about 2.4 ops per value."""
    ops: list[Op] = []

    def add(
        process: int, type: OpType, f: OpF, value: dict[str, Any], node: int | None = None
    ) -> None:
        ops.append(Op(len(ops), float(len(ops)), process, type, f, value, node))

    logs: dict[str, list[list[int]]] = {f"t-{k}": [] for k in range(keys)}
    for v in range(values):
        key = f"t-{v % keys}"
        add(v % 4, OpType.INVOKE, OpF.SEND, {"key": key, "value": v})
        add(v % 4, OpType.OK, OpF.SEND, {"key": key, "value": v, "offset": len(logs[key])})
        logs[key].append([len(logs[key]), v])
    for consumer in (10, 11):
        add(
            consumer,
            OpType.OK,
            OpF.ASSIGN,
            {"keys": list(logs), "positions": dict.fromkeys(logs, 0)},
        )
        for key, log in logs.items():
            for begin in range(0, len(log), 10):
                add(consumer, OpType.INVOKE, OpF.POLL, {})
                add(
                    consumer,
                    OpType.OK,
                    OpF.POLL,
                    {"records": {key: log[begin : begin + 10]}, "start": {key: begin}},
                )
    for node in (None, 1, 2, 3):
        add(20, OpType.INVOKE, OpF.DRAIN, {}, node)
        add(20, OpType.OK, OpF.DRAIN, {"records": logs}, node)
    return ops


@pytest.mark.slow
def test_a_200k_op_history_is_checked_and_anomalies_still_found() -> None:
    ops = big_history(84_000)
    assert len(ops) >= 200_000
    # Lose one acked value from every read: the checker must still find that needle.
    victim = 40_000
    ops = [
        replace(
            op,
            value={
                **op.value,
                "records": {
                    k: [r for r in rs if r[1] != victim] for k, rs in op.value["records"].items()
                },
            },
        )
        if op.type is OpType.OK and op.f in (OpF.POLL, OpF.DRAIN)
        else op
        for op in ops
    ]
    began = time.perf_counter()
    result = check(ops)
    elapsed_s = time.perf_counter() - began
    assert result.summary.sends_ok == 84_000
    assert result[Kind.LOST_WRITE].count == 1
    assert examples(result, Kind.LOST_WRITE)[0]["value"] == victim
    assert result.bad_kinds == (Kind.LOST_WRITE, Kind.POLL_SKIP)
    print(f"checked {len(ops)} ops in {elapsed_s:.2f}s")


def test_a_small_big_history_is_valid() -> None:
    """The fast cousin of the test above, so the default suite exercises big_history too."""
    assert check(big_history(2_000)).valid


def test_an_acked_read_tail_missing_from_the_final_leader_drain_is_lost() -> None:
    """Values acknowledged and read, then truncated away with nothing written over them: no
    drain reaches their offsets, but the leader drain reads to the high watermark, which every
    write acknowledged before it began sits below — they are lost on the leader."""
    h = History()
    _three_acked(h)
    h.poll(10, {K0: [(0, 0), (1, 1), (2, 2)]})
    drain = h.drain(20, {K0: [(0, 0)]})  # the tail, offsets 1 and 2, is gone
    result = h.check()
    assert found(result) == {Kind.LOST_ON_NODE}
    assert [
        (e["node"], e["offset"], e["value"], e["found"], e["drain_op"])
        for e in examples(result, Kind.LOST_ON_NODE)
    ] == [
        (None, 1, 1, None, drain.index),
        (None, 2, 2, None, drain.index),
    ]


def test_a_leader_drain_begun_before_an_ack_is_not_held_to_it() -> None:
    h = History()
    _three_acked(h)
    late = h.invoke_send(0, K0, 3)
    h.drain(20, {K0: [(0, 0), (1, 1), (2, 2)]})  # began (and ended) before the ack of 3
    h.complete_send(late, 3)
    h.poll(10, {K0: [(0, 0), (1, 1), (2, 2), (3, 3)]})
    assert found(h.check()) == set()
