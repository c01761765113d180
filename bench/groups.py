"""What a rebalance costs a consumer group: a join, a leave, a consumer kill and a coordinator
kill, for eager and cooperative members. Run by ``make bench-groups`` (``python -m bench.groups``).

One local 3-broker cluster (mutual TLS, brokers' session 1.5 s) per protocol; per scenario a
fresh 6-partition topic and group, records fed at ``--rate`` records/s (acks=all), consumer
processes (``bench/group_members.py``: session 3 s, heartbeat 0.3 s, commit after every poll)
that report every callback and every record with its wall time. Once the group is balanced and
records flow, the fault; the scenario ends when the group is balanced again (over the members
alive) and has stayed so for ``--settle-s``. Figures per scenario:

- ``generations``: how far the group's generation moved (DescribeGroup before and after);
- ``rebalances``: rounds the members saw (distinct generations in assign callbacks after the fault);
- ``moved``: partitions whose owner changed between before and after;
- ``revoked``: partitions given up by members that stayed (each revoke or loss callback counts
  its partitions);
- ``pause_s``: the longest gap between two processed records of one partition, over the
  partitions, from the fault to the end (a partition that moved counts too: its hand-over is
  part of the cost);
- ``pause_stayed_s``: the same over the partitions whose owner did not change;
- ``duplicates``: records processed twice (at-least-once allows some after a kill; a clean
  rebalance should have none).

``--scenarios`` and ``--protocols`` choose; the report goes to ``bench-results/groups.json``.
The member script keeps working against consumers without ``on_lost`` or cooperative assignors,
so the same driver measures an older raftlog (run from a checkout of it, eager only).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from raftlog.client import Admin
from raftlog.client.local_cluster import LocalCluster

from .common import BenchError, bench_shell, free_base_port, write_json
from .group_members import (
    EAGER,
    ConsumerProcess,
    Feed,
    coordinator_of,
    describe_group,
    longest_pause,
    wait_until,
)

__all__ = ["PROTOCOLS", "SCENARIOS", "ScenarioResult", "main", "render", "summarize"]

PARTITIONS = 6
SCENARIOS = ("join", "leave", "consumer-kill", "coordinator-kill")
PROTOCOLS = {"eager": EAGER, "cooperative": "cooperative-sticky"}
_BALANCE_TIMEOUT_S = 60.0
_DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    protocol: str
    scenario: str
    figures: dict[str, float] = field(default_factory=dict)


# ---- the figures, from the timelines (pure) ------------------------------------------------------


def summarize(
    before: dict[int, int],
    after: dict[int, int],
    timelines: Sequence[list[dict[str, Any]]],
    stayed_members: Sequence[int],
    fault_t: float,
    end_t: float,
    generations: int,
) -> dict[str, float]:
    """The scenario's figures (module docstring). ``before``/``after``: partition → index of its
    owning member in ``timelines``; ``stayed_members``: members alive from start to end."""
    moved = {p for p in before if after.get(p) != before[p]}
    times: dict[int, list[float]] = {}
    values: list[str] = []
    rounds: set[int] = set()
    revoked = 0
    for i, events in enumerate(timelines):
        for e in events:
            if e["event"] == "record":
                times.setdefault(e["p"], []).append(e["t"])
                values.append(e["v"])
            elif e["event"] == "assign" and e.get("t", 0) >= fault_t:
                rounds.add(int(e["generation"]))
            elif (
                e["event"] in ("revoke", "lost")
                and i in stayed_members
                and e.get("t", end_t) >= fault_t
            ):
                revoked += len(e["partitions"])
    pauses = {p: longest_pause(times.get(p, []), fault_t, end_t) for p in range(PARTITIONS)}
    stayed = [pauses[p] for p in pauses if p not in moved]
    return {
        "generations": generations,
        "rebalances": len(rounds),
        "moved": len(moved),
        "revoked": revoked,
        "pause_s": round(max(pauses.values()), 3),
        "pause_stayed_s": round(max(stayed), 3) if stayed else 0.0,
        "duplicates": len(values) - len(set(values)),
    }


def render(results: Sequence[ScenarioResult]) -> Table:
    table = Table(title="raftlog consumer-group rebalances (3 brokers, 6 partitions)")
    columns = ("generations", "rebalances", "moved", "revoked", "pause_s", "pause_stayed_s")
    for name in ("protocol", "scenario", *columns, "duplicates"):
        table.add_column(name, justify="left" if name in ("protocol", "scenario") else "right")
    for r in results:
        table.add_row(
            r.protocol,
            r.scenario,
            *(f"{r.figures.get(c, float('nan')):g}" for c in columns),
            f"{r.figures.get('duplicates', 0):g}",
        )
    return table


# ---- one scenario on a live cluster --------------------------------------------------------------


def _owners(members: Sequence[ConsumerProcess]) -> dict[int, int]:
    return {p: i for i, m in enumerate(members) for _, p in m.assignment}


def _balanced(members: Sequence[ConsumerProcess]) -> bool:
    sizes = [len(m.assignment) for m in members]
    return sum(sizes) == PARTITIONS and max(sizes) - min(sizes) <= 1


def _stable_for(condition: Callable[[], bool], seconds: float, timeout_s: float, what: str) -> None:
    """Wait until ``condition`` has held for ``seconds`` in a row."""
    since: list[float] = []

    def held() -> bool:
        if not condition():
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] >= seconds

    wait_until(held, timeout_s, what)


def run_scenario(
    cluster: LocalCluster, protocol: str, scenario: str, args: argparse.Namespace
) -> ScenarioResult:
    group = topic = f"{protocol}-{scenario}"
    with Admin(cluster.bootstrap, security=cluster.security) as admin:
        admin.create_topic(topic, PARTITIONS, 3, min_insync_replicas=2)
    feed = Feed(cluster, topic, PARTITIONS, per_second=args.rate)
    count = 2 if scenario == "join" else 3
    members = [
        ConsumerProcess.member(cluster, group, topic, assignors=PROTOCOLS[protocol])
        for _ in range(count)
    ]
    everyone = list(members)
    killed: int | None = None
    try:
        _stable_for(lambda: _balanced(members), 2.0, _BALANCE_TIMEOUT_S, "a balanced group")
        wait_until(lambda: all(m.of("record") for m in members), 30, "records flowing")
        before, generation = _owners(members), describe_group(cluster, group).generation
        fault_t = time.time()
        if scenario == "join":
            members.append(
                ConsumerProcess.member(cluster, group, topic, assignors=PROTOCOLS[protocol])
            )
            everyone.append(members[-1])
        elif scenario == "leave":
            members[-1].signal(signal.SIGTERM)  # closes: a LeaveGroup
            members.pop()
        elif scenario == "consumer-kill":
            members.pop().stop()
        else:
            killed = coordinator_of(cluster, group)
            cluster.kill(killed)
        _stable_for(lambda: _balanced(members), args.settle_s, _BALANCE_TIMEOUT_S, "rebalanced")
        end_t = time.time() - args.settle_s  # balanced since then
        wanted = feed.stop()
        wait_until(
            lambda: wanted <= {v for m in everyone for v in m.values()},
            _DRAIN_TIMEOUT_S,
            "every acknowledged record processed",
        )
        after = {p: everyone.index(members[i]) for p, i in _owners(members).items()}
        stayed = [everyone.index(m) for m in members if m in everyone[:count]]
        figures = summarize(
            before,
            after,
            [list(m.events) for m in everyone],
            stayed,
            fault_t,
            end_t,
            describe_group(cluster, group).generation - generation,
        )
        return ScenarioResult(protocol, scenario, figures)
    finally:
        feed.stop()
        for m in everyone:
            m.stop()
        if killed is not None:
            with contextlib.suppress(Exception):
                cluster.start(killed)


def measure(args: argparse.Namespace, console: Console) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    for protocol in args.protocols:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            cluster = LocalCluster(Path(tmp) / "cluster")
            console.print(f"[bold]{protocol}[/bold]: starting 3 brokers …")
            cluster.up(
                3,
                free_base_port(3),
                timeout_s=60,
                settings={"timeouts": {"session_timeout_ms": 1500, "heartbeat_interval_ms": 150}},
            )
            try:
                for scenario in args.scenarios:
                    result = run_scenario(cluster, protocol, scenario, args)
                    console.print(f"  {scenario}: {result.figures}")
                    results.append(result)
            finally:
                cluster.down(timeout_s=15)
    return results


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.groups", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--rate", type=int, default=200, help="records/s fed (acks=all)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="balanced this long = done")
    parser.add_argument("--dir", default=".", help="parent of the temporary cluster directory")
    parser.add_argument("--out", default="bench-results/groups.json")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.protocols = [p for p in args.protocols.split(",") if p]
    unknown = set(args.scenarios) - set(SCENARIOS) | set(args.protocols) - set(PROTOCOLS)
    if unknown:
        parser.error(f"unknown: {sorted(unknown)}")
    if not 10 <= args.rate <= 5000:
        parser.error("--rate must be 10-5000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    console = Console()
    with bench_shell(console, "bench-groups interrupted; its cluster was stopped"):
        try:
            results = measure(args, console)
        except AssertionError as exc:  # a wait that timed out: the group never settled
            raise BenchError(str(exc)) from exc
    console.print(render(results))
    write_json(
        args.out,
        {
            "scenarios": [
                {"protocol": r.protocol, "scenario": r.scenario, **r.figures} for r in results
            ],
            "meta": {"rate": args.rate, "settle_s": args.settle_s, "partitions": PARTITIONS},
        },
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
