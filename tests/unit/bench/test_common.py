"""The benchmark drivers' shared scaffolding (bench/common.py) and the pure parts of the storage
and quorum-scale drivers: targets and the report table, the JSON files, pipelined submits, the
scale benchmark's commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.common import Bound, Target, figure_table, merge_json, pipeline, verdicts, write_json
from bench.quorum_scale_commands import (
    INCARNATION,
    alter_commands,
    broker_commands,
    count_label,
    create_topic_command,
    heal_commands,
    refusal,
    topic_name,
    unhealthy_partitions,
)
from bench.storage import Report as StorageReport
from bench.storage import render as render_storage
from raftlog.raft.commands import FenceBroker, encode_command
from raftlog.raft.store import MetadataStore

# ---- targets, the report table, the JSON files ---------------------------------------------------


def test_verdicts_cover_only_the_measured_figures() -> None:
    targets = [Target("a", 1.0, Bound.BELOW), Target("b", 2.0, Bound.AT_LEAST)]
    assert verdicts(targets, {"a": 0.5, "c": 9.0}) == {"a": True}
    assert verdicts(targets, {"a": 1.0, "b": 2.0}) == {"a": False, "b": True}


def test_the_table_shows_measured_figures_with_their_targets_and_reference() -> None:
    table = figure_table(
        "t",
        "c",
        {"x": 3.0, "y": 1.0},
        ["x", "y", "z"],
        lambda key, value: f"{value:.1f} u",
        targets=[Target("x", 5.0, Bound.AT_LEAST)],
        reference=("ref", {"y": 7.0}),
    )
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "3.0 u" in text and "≥ 5" in text and "MISS" in text
    assert "7.0 u" in text
    assert table.row_count == 2  # z was not measured
    assert [c.header for c in table.columns] == ["figure", "value", "target", "result", "ref"]
    bare = figure_table("t", "c", {"x": 1.0}, ["x"], lambda k, v: str(v))
    assert [c.header for c in bare.columns] == ["figure", "value"]


def test_the_storage_report_keeps_its_json_keys() -> None:
    figures = {"append_ratio_16k": 0.9, "append_ratio_1m": 0.7, "read_mbps_1k": 100.0}
    body = StorageReport(figures, {"repeat": 1}).to_json()
    assert body["targets"]["append_ratio_16k"] == {"bound": 0.8, "at_least": True, "ok": True}
    assert body["targets"]["append_ratio_1m"]["ok"] is False
    assert "recovery_s_1gib" not in body["targets"]  # not measured
    assert body["all_targets_met"] is False
    assert set(body) == {*figures, "targets", "all_targets_met", "meta"}
    console = Console(width=120, record=True)
    console.print(render_storage(StorageReport(figures, {})))
    assert "MISS" in console.export_text()


def test_merge_json_keeps_what_another_driver_wrote(tmp_path: Path) -> None:
    path = tmp_path / "results" / "quorum.json"
    write_json(path, {"failover_ms_median_3": 300.0, "shared": 1})
    merge_json(path, {"shared": 2, "catch_up_s_10k_partitions": 0.5})
    assert json.loads(path.read_text()) == {
        "catch_up_s_10k_partitions": 0.5,
        "failover_ms_median_3": 300.0,
        "shared": 2,
    }
    assert not (tmp_path / "results" / "quorum.json.tmp").exists()


# ---- pipelined submits ---------------------------------------------------------------------------


class _FakeQuorum:
    """Answers every command from another thread; remembers the most ever unanswered."""

    def __init__(self, answer: Callable[[bytes], tuple[bytes | None, Any]]) -> None:
        self.answer = answer
        self.inflight = 0
        self.inflight_max = 0
        self.lock = threading.Lock()

    def submit_async(
        self, command: bytes, timeout_s: float, callback: Callable[[bytes | None, Any], None]
    ) -> None:
        with self.lock:
            self.inflight += 1
            self.inflight_max = max(self.inflight_max, self.inflight)

        def reply() -> None:
            with self.lock:
                self.inflight -= 1
            callback(*self.answer(command))

        threading.Timer(0.001, reply).start()


def test_a_pipeline_keeps_its_bound_and_tells_answers_apart() -> None:
    def answer(command: bytes) -> tuple[bytes | None, Any]:
        if command == b"lost":
            return None, TimeoutError("lost")
        return (b"no" if command == b"refused" else b"yes"), None

    quorum = _FakeQuorum(answer)
    commands = [b"ok"] * 40 + [b"refused"] * 3 + [b"lost"] * 2
    outcome = pipeline(
        quorum,  # type: ignore[arg-type]
        commands,
        4,
        timeout_s=10.0,
        submit_timeout_s=1.0,
        refusal=lambda result: "said no" if result == b"no" else None,
    )
    assert outcome.complete and outcome.count == 45 and outcome.answered == 45
    assert (outcome.ok, outcome.refused, outcome.failed) == (40, 3, 2)
    assert outcome.problem in {"said no", "TimeoutError('lost')"}
    assert quorum.inflight_max <= 4


def test_a_pipeline_that_is_not_answered_in_time_says_so() -> None:
    class Silent:
        def submit_async(self, command: bytes, timeout_s: float, callback: Any) -> None:
            pass

    outcome = pipeline(Silent(), [b"x"] * 3, 2, timeout_s=0.05, submit_timeout_s=1.0)  # type: ignore[arg-type]
    assert not outcome.complete and outcome.answered == 0


# ---- the scale benchmark's commands --------------------------------------------------------------


def _apply(store: MetadataStore, command: Any) -> str | None:
    return refusal(store.apply(encode_command(command)))


def test_alter_commands_apply_cleanly_and_healing_restores_the_created_shape() -> None:
    store = MetadataStore()
    assert all(_apply(store, c) is None for c in broker_commands(5))
    with store.read() as state:
        create = create_topic_command(state, topic_name(0), 20, 3)
    assert _apply(store, create) is None
    with store.read() as state:
        alters = alter_commands(state, 30)
    assert [_apply(store, c) for c in alters] == [None] * 30
    assert _apply(store, FenceBroker(1, INCARNATION)) is None
    with store.read() as state:
        assert unhealthy_partitions(state) > 0
    for _ in range(5):
        with store.read() as state:
            if unhealthy_partitions(state) == 0:
                break
            commands = heal_commands(state)
        for command in commands:
            store.apply(encode_command(command))
    with store.read() as state:
        assert unhealthy_partitions(state) == 0


@pytest.mark.parametrize(
    ("count", "label"), [(100_000, "100k"), (10_000, "10k"), (2500, "2500"), (999, "999")]
)
def test_count_labels(count: int, label: str) -> None:
    assert count_label(count) == label
