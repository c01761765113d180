"""The two clock domains are kept apart by the type checker (``segments/clock.py``).

The bug these types prevent: a broker handed its monotonic clock to retention, which compared it
with record timestamps, so ``retention.ms`` never deleted anything. Each case below is checked by
running mypy (as ``make lint`` does) on a few lines that mix the domains.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from raftlog.segments.clock import ManualClock, MonoMs, SystemClock, WallMs

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("segments", "cluster", "raft", "proto")

SNIPPET = """
from raftlog.cluster.producer_state import ProducerStateManager
from raftlog.cluster.purgatory import Purgatory
from raftlog.segments import Log
from raftlog.segments.clock import Clock


def mixed(log: Log, purgatory: Purgatory[str], ps: ProducerStateManager, clock: Clock) -> None:
    log.delete_retained(clock.mono_ms())  # retention compares with record timestamps: wall
    purgatory.advance_clock(clock.wall_ms())  # timeouts are monotonic
    ps.expire(clock.mono_ms(), 1000)  # producer expiry is on batch timestamps: wall
    log.delete_retained(12345)  # a bare int says nothing about its domain


def right(log: Log, purgatory: Purgatory[str], ps: ProducerStateManager, clock: Clock) -> None:
    log.delete_retained(clock.wall_ms())
    purgatory.advance_clock(clock.mono_ms())
    ps.expire(clock.wall_ms(), 1000)
"""


def test_mixing_the_clock_domains_is_a_type_error(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    root = tmp_path / "src"
    (root / "raftlog").mkdir(parents=True)
    for package in PACKAGES:
        os.symlink(REPO / package, root / "raftlog" / package)
    (root / "snippet.py").write_text(textwrap.dedent(SNIPPET))
    stdout, _, status = api.run(
        [
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            str(root / "snippet.py"),
        ]
    )
    errors = [line for line in stdout.splitlines() if "snippet.py" in line and "error" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    text = textwrap.dedent(SNIPPET).splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("def mixed"))
    end = next(i for i, line in enumerate(text) if line.startswith("def right"))
    mixed_lines = {i + 1 for i in range(start + 1, end) if text[i].strip()}  # every call there
    assert len(mixed_lines) == 4  # and right() has none
    assert lines == mixed_lines, stdout
    assert status == 1


def test_the_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(wall_ms=5_000, mono_ms=100)
    assert (clock.wall_ms(), clock.mono_ms()) == (WallMs(5_000), MonoMs(100))
    clock.advance(250)
    assert (clock.wall_ms(), clock.mono_ms()) == (5_250, 350)
    clock.set_wall(1_000)  # an NTP step back: the monotonic clock does not follow
    assert (clock.wall_ms(), clock.mono_ms()) == (1_000, 350)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_the_system_clock_gives_both_domains() -> None:
    import time

    clock = SystemClock()
    assert abs(clock.wall_ms() - time.time() * 1000) < 5_000
    assert abs(clock.mono_ms() - time.monotonic() * 1000) < 5_000
