"""Availability figures from a history (chaos/availability.py)."""

from __future__ import annotations

from raftlog.chaos.availability import availability
from raftlog.chaos.history import HistoryBuilder, Op, OpF, OpType


def history(acks: dict[str, list[float]]) -> list[Op]:
    builder = HistoryBuilder()
    events = sorted((t, key) for key, times in acks.items() for t in times)
    for n, (t, key) in enumerate(events):
        value = {"key": key, "value": n}
        invoke = builder.invoke(0, OpF.SEND, value, time_ms=t * 1000 - 1)
        builder.complete(invoke, OpType.OK, {**value, "offset": n}, time_ms=t * 1000)
    return list(builder.ops)


def every(step: float, start: float, end: float) -> list[float]:
    return [round(start + i * step, 3) for i in range(round((end - start) / step) + 1)]


def test_the_worked_example() -> None:
    ops = history({"t-0": [*every(0.1, 0.0, 9.9), 15.4, *every(0.1, 16.0, 20.0)]})
    found = availability(ops, [("partition", 10.0, 15.0)], ["t-0"], 20.0)
    (recovery,) = found.recoveries
    assert round(recovery.per_key["t-0"] or 0, 3) == 0.4 == round(recovery.max_s or 0, 3)
    assert found.longest_quiet is not None
    assert (found.longest_quiet.start_s, found.longest_quiet.end_s) == (15.4, 16.0)


def test_a_key_that_never_recovers_in_its_window_has_no_recovery() -> None:
    ops = history({"t-0": every(0.5, 0, 20), "t-1": [*every(0.5, 0, 9.5), 31.0]})
    found = availability(
        ops, [("ring", 5.0, 10.0), ("kill", 30.0, 32.0)], ["t-0", "t-1", "t-2"], 40.0
    )
    ring = found.recoveries[0]
    assert ring.per_key["t-0"] == 0.0  # an ack exactly at the heal
    assert ring.per_key["t-1"] is None  # its next ack came after the next fault started
    assert ring.per_key["t-2"] is None  # never acknowledged at all
    assert ring.max_s is None and found.worst_recovery_s is None
    assert [r.name for r in found.unrecovered()] == ["ring", "kill"]
    # t-1 was silent from 10 s to 30 s with no fault in force: 20 s
    assert found.longest_quiet_per_key["t-1"].length_s == 20.0


def test_an_unhealed_fault_is_quiet_time_for_nobody() -> None:
    ops = history({"t-0": every(1.0, 0, 10)})
    found = availability(ops, [("pause", 10.0, None)], ["t-0"], 30.0)
    assert found.recoveries == ()
    assert found.longest_quiet is not None and found.longest_quiet.length_s == 1.0


def test_the_stretches_a_timeline_marks() -> None:
    ops = history({"t-0": [*every(0.1, 0.0, 9.9), 15.4, *every(0.1, 16.0, 20.0)]})
    found = availability(ops, [("partition", 10.0, 15.0)], ["t-0"], 20.0)
    assert [(round(a, 3), round(b, 3), label) for a, b, label in found.stretches()] == [
        (15.0, 15.4, "no ack after a heal"),
        (15.4, 16.0, "silence, no fault"),
    ]
    assert found.stretches(min_s=0.5) == [(15.4, 16.0, "silence, no fault")]
    never = availability(history({"t-0": every(0.5, 0, 9.5)}), [("ring", 5.0, 10.0)], ["t-0"], 12)
    labels = [label for _, _, label in never.stretches()]
    assert labels == ["never recovered", "silence, no fault"]  # both from the heal at 10 s to 12 s


def test_serving_through_a_fault_is_the_longest_gap_while_it_was_in_force() -> None:
    """t-0 keeps acknowledging through the ring but for 1.5 s; t-1 stops for the whole fault."""
    ops = history(
        {
            "t-0": [*every(0.1, 0.0, 10.5), *every(0.1, 12.0, 20.0)],
            "t-1": [*every(0.1, 0.0, 9.9), *every(0.1, 15.3, 20.0)],
        }
    )
    found = availability(ops, [("majorities-ring", 10.0, 15.0)], ["t-0", "t-1"], 20.0)
    (fault,) = found.recoveries
    assert {k: round(v, 3) for k, v in fault.gap_during_per_key.items()} == {
        "t-0": 1.5,
        "t-1": 5.0,
    }
    assert found.serving_by_kind() == {
        "majorities-ring": {"faults": 1, "keys": 2, "kept_serving": 1}
    }
    assert found.to_json()["serving_during_faults"] == found.serving_by_kind()
