"""The seeded whole-cluster simulation (tier 3 of STYLE.md's tests): a short seed set passes, a
seed replays bit for bit (in this process and in another one), and each planted bug is found —
on a seed the real code passes — and replays from its seed.

``make sim`` runs the standard set (200 seeds of 60 simulated seconds); this module runs a
short one. A failure prints ``SEED=<n>``: ``make sim SEED=<n>`` replays it,
``make sim SEED=<n> TRACE=trace.txt`` also writes what happened.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.__main__ import STANDARD_FIRST, STANDARD_SEEDS
from tests.sim.plants import PLANTS, planted
from tests.sim.sim import SimConfig, SimResult, run_seed

SHORT_SEEDS = range(1, 6)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The brokers log thousands of lines per seed; pytest would keep them all."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _run(seed: int, plant: str | None = None) -> SimResult:
    with planted(plant):
        return run_seed(seed, SimConfig())


@functools.cache
def _real(seed: int) -> SimResult:
    """The real code's result for ``seed``, run once per session (a seed replays exactly)."""
    return _run(seed)


@pytest.mark.parametrize("seed", SHORT_SEEDS)
def test_seed_passes(seed: int) -> None:
    result = _real(seed)
    assert result.ok, result.describe()
    assert result.simulated_ms >= SimConfig().duration_ms
    assert result.summary["sends_ok"] > 1000, result.describe()  # it did real work


def test_a_seed_replays_bit_for_bit() -> None:
    first = _real(3)
    again = _run(3)
    assert first.history_sha256 == again.history_sha256
    # another process, another hash seed: nothing may depend on set order of strings
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    replay = subprocess.run(
        [sys.executable, "-m", "tests.sim", "--seed", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert f"history sha256 {first.history_sha256}" in replay.stdout, replay.stdout[-2000:]


def test_seeds_differ() -> None:
    assert _real(4).history_sha256 != _real(5).history_sha256


# ---- bugs of the real code the simulation found ---------------------------------------------

KNOWN_BUGS: dict[int, str] = {}  # none open: a failing seed of `make sim` goes here


# found by the simulation and fixed: their seeds must keep passing
FIXED_BUGS = {
    44: "an AlterPartition that got no answer may have committed: the leader dropped the pending "
    "ISR addition and counted the HW without a replica the controller had made an ISR member, "
    "which was then elected without those records (now: kept pending and sent again)",
    63: "an AlterPartition resent after going unanswered was refused for its stale epochs "
    "(a stale-epoch error) although the first send had committed: the refusal was taken as "
    "definite, the pending ISR addition dropped and the HW counted without that replica (now: "
    "only INELIGIBLE_REPLICA and INVALID_REQUEST, which come only while the epochs are current, "
    "forget a proposal; alter_partition_outcome)",
    152: "after an unclean (power-loss) restart a follower rejoined the ISR on the leader's "
    "progress from its previous incarnation, which the new one never showed (now, as KIP-903: "
    "a new incarnation's fetch resets its progress, and AlterPartition names the incarnation "
    "each member fetched as; the controller refuses to add one that has restarted since)",
}


@pytest.mark.parametrize("seed", list(FIXED_BUGS))
def test_fixed_bug_stays_fixed(seed: int) -> None:
    result = _run(seed)
    assert result.ok, f"{FIXED_BUGS[seed]}\n{result.describe()}"


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=r))
        for s, r in KNOWN_BUGS.items()
    ],
)
def test_known_bug(seed: int) -> None:
    """Pinned until fixed: an XPASS means the bug is gone and the entry should go. The seeds
    hold for this simulator's schedule: a change to it (faults, timings, draws) moves them —
    find them again with ``make sim``, which lists every failing seed."""
    result = _run(seed)
    assert result.ok, result.describe()


# ---- planted bugs ----------------------------------------------------------------------------


def _scan(seed: int) -> tuple[int, bool]:
    """In a pool worker (forked with the plant in place): does the checker pass the history?"""
    logging.disable(logging.CRITICAL)
    return seed, run_seed(seed, SimConfig()).valid


def _first_found(plant: str) -> tuple[int, SimResult]:
    """The first seed of the standard set on which the checker fails the planted code and the
    real code passes (a failure the real code shares is not the plant's)."""
    seeds = list(range(STANDARD_FIRST, STANDARD_FIRST + STANDARD_SEEDS))
    jobs = min(2, os.cpu_count() or 1)
    for start in range(0, len(seeds), jobs):
        chunk = seeds[start : start + jobs]
        with planted(plant), multiprocessing.get_context("fork").Pool(jobs) as pool:
            outcomes = pool.map(_scan, chunk)
        for seed, valid in outcomes:
            if not valid and _real(seed).ok:
                return seed, _run(seed, plant)
    raise AssertionError(f"{plant}: no seed of the standard set found it")


@pytest.mark.parametrize(
    "plant",
    [
        "leader-outside-isr",
        pytest.param("hw-committed-isr", marks=pytest.mark.slow),
        pytest.param("truncate-to-hw", marks=pytest.mark.slow),
    ],
)
def test_planted_bug_is_found_and_replays(plant: str) -> None:
    assert plant in PLANTS
    seed, found = _first_found(plant)
    print(f"{plant}: found by SEED={seed}\n{found.describe()}")
    assert not found.valid, found.describe()  # the checker saw it
    assert _run(seed, plant).history_sha256 == found.history_sha256
