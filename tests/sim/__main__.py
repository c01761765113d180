"""``python -m tests.sim``: run the standard seed set (``make sim``) or replay one seed.

    python -m tests.sim                      # seeds 1..200, 2 jobs, writes bench-results/sim.json
    python -m tests.sim --seed 17            # replay one seed, print what it found
    python -m tests.sim --seeds 50 --first 1000 --jobs 2 --out -

Each seed runs in a worker process of its own pool slot; a failing seed prints ``SEED=<n>`` with
what failed, and ``make sim SEED=<n>`` replays it exactly (the history hash printed by both runs
is the proof). The exit status is 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from typing import Any

from .plants import PLANTS, planted
from .sim import SimConfig, SimResult, run_seed

STANDARD_SEEDS = 200
STANDARD_FIRST = 1


_PLANT: str | None = None  # set in each worker by _init


def _init(plant: str | None) -> None:
    global _PLANT
    _PLANT = plant


def _run(seed: int) -> dict[str, Any]:
    logging.disable(logging.CRITICAL)  # the brokers' own logs: thousands of lines per seed
    with planted(_PLANT):
        result = run_seed(seed, SimConfig())
    return _brief(result)


def _brief(result: SimResult) -> dict[str, Any]:
    return {
        "seed": result.seed,
        "ok": result.ok,
        "text": result.describe(),
        "sha256": result.history_sha256,
        "simulated_ms": result.simulated_ms,
        "wall_s": result.wall_s,
        "summary": result.summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, help="replay this one seed and print its result")
    parser.add_argument("--seeds", type=int, default=STANDARD_SEEDS, help="how many seeds")
    parser.add_argument("--first", type=int, default=STANDARD_FIRST, help="the first seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--out", help="results JSON, or - (default: bench-results/sim.json; - with --plant)"
    )
    parser.add_argument("--plant", choices=sorted(PLANTS), help="plant this bug (plants.py)")
    parser.add_argument("--trace", help="with --seed: write what happened to this file")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = "-" if args.plant else "bench-results/sim.json"
    _init(args.plant)
    if args.seed is not None and args.trace:
        logging.disable(logging.CRITICAL)
        with planted(args.plant):
            result = run_seed(args.seed, SimConfig(), trace=True)
        with open(args.trace, "w") as f:
            f.write("\n".join(result.trace) + "\n")
        print(result.describe())
        print(f"history sha256 {result.history_sha256}")
        return 0 if result.ok else 1
    if args.seed is not None:
        brief = _run(args.seed)
        print(brief["text"])
        print(f"history sha256 {brief['sha256']}")
        return 0 if brief["ok"] else 1
    seeds = list(range(args.first, args.first + args.seeds))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    context = multiprocessing.get_context("fork")
    with context.Pool(args.jobs, _init, (args.plant,), maxtasksperchild=20) as pool:
        for brief in pool.imap_unordered(_run, seeds):
            results.append(brief)
            if not brief["ok"]:
                print(brief["text"], flush=True)
            done = len(results)
            if done % 20 == 0 or done == len(seeds):
                print(
                    f"{done}/{len(seeds)} seeds, {time.perf_counter() - started:.0f} s", flush=True
                )
    wall_s = time.perf_counter() - started
    results.sort(key=lambda b: b["seed"])
    failures = [b["seed"] for b in results if not b["ok"]]
    simulated_s = sum(b["simulated_ms"] for b in results) / 1000
    report = {
        "seeds": seeds,
        "failures": failures,
        "simulated_s_per_wall_s": round(simulated_s / wall_s, 2),
        "simulated_s_per_cpu_s": round(simulated_s / sum(b["wall_s"] for b in results), 2),
        "seeds_per_minute": round(len(seeds) / wall_s * 60, 1),
        "wall_s": round(wall_s, 1),
        "jobs": args.jobs,
        "cpus": os.cpu_count(),
        "duration_s_per_seed": SimConfig().duration_ms / 1000,
        "simulated_s_total": round(simulated_s, 1),
        "sends_ok_per_seed": round(sum(b["summary"]["sends_ok"] for b in results) / len(results)),
        "sends_info_per_seed": round(
            sum(b["summary"]["sends_info"] for b in results) / len(results)
        ),
        "failed": {str(b["seed"]): b["text"] for b in results if not b["ok"]},
    }
    text = json.dumps(report, indent=1)
    if args.out == "-":
        print(text)
    else:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(
        f"{len(seeds)} seeds, {len(failures)} failed {failures[:20]}; "
        f"{report['simulated_s_per_wall_s']} simulated s per wall s, "
        f"{report['seeds_per_minute']} seeds/min on {args.jobs} jobs",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
