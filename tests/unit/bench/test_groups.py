"""make bench-groups' figures from members' timelines (pure)."""

from __future__ import annotations

from typing import Any

from bench.groups import summarize


def rec(p: int, t: float, v: str) -> dict[str, Any]:
    return {"event": "record", "p": p, "t": t, "v": v}


def test_a_join_that_moves_two_partitions() -> None:
    # members 0 and 1 own 0-2 and 3-5; at t=10 member 2 joins and gets 2 and 5 at generation 2
    a = [rec(p, 9.5, f"a{p}") for p in (0, 1, 2)] + [
        {"event": "revoke", "partitions": [["t", 2]], "t": 10.2, "commit": True},
        {"event": "assign", "partitions": [["t", 0], ["t", 1]], "generation": 2, "t": 10.3},
        rec(0, 10.4, "a0b"),
        rec(1, 10.5, "a1b"),
    ]
    b = [rec(p, 9.5, f"b{p}") for p in (3, 4, 5)] + [
        {"event": "revoke", "partitions": [["t", 5]], "t": 10.2, "commit": True},
        rec(3, 10.6, "b3b"),
        rec(4, 10.6, "b4b"),
    ]
    c = [
        {"event": "assign", "partitions": [["t", 2], ["t", 5]], "generation": 3, "t": 11.0},
        rec(2, 11.5, "c2"),
        rec(5, 11.5, "c5"),
        rec(5, 11.6, "b3b"),  # a record processed a second time
    ]
    figures = summarize(
        before={0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1},
        after={0: 0, 1: 0, 2: 2, 3: 1, 4: 1, 5: 2},
        timelines=[a, b, c],
        stayed_members=[0, 1],
        fault_t=10.0,
        end_t=12.0,
        generations=2,
    )
    assert figures == {
        "generations": 2,
        "rebalances": 2,  # generations 2 and 3 in assign callbacks after the fault
        "moved": 2,
        "revoked": 2,
        "pause_s": 2.0,  # partitions 2 and 5: 9.5 → 11.5
        "pause_stayed_s": 1.1,  # partition 3 and 4: 9.5 → 10.6
        "duplicates": 1,
    }


def test_a_partition_with_no_record_in_the_window_paused_for_all_of_it() -> None:
    figures = summarize({0: 0}, {0: 0}, [[rec(0, 1.0, "x")]], [0], 5.0, 8.0, 0)
    assert figures["pause_s"] == 3.0 and figures["moved"] == 0 and figures["rebalances"] == 0
