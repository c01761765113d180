"""``raftlog partition|leader|broker drain``: moving partitions from the command line.

    raftlog partition reassign --plan plan.json [--throttle 10000000] [--wait]
    raftlog partition reassign --plan plan.json --cancel          # the moves in progress go back
    raftlog partition reassignments [--topic orders] [--json]     # what is moving now
    raftlog broker drain 3 [--throttle 10000000] [--wait]         # every replica off broker 3
    raftlog leader elect --preferred [--topic orders]             # leaders back to first replicas
    raftlog topic add-partitions orders --partitions 12

``plan.json`` is kafka-reassign-partitions' format (``raftlog.client.partition_admin``). A thin
shell over ``Admin``'s partition calls.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .partition_admin import MoveResult, PlanError, parse_plan

__all__ = ["add_parsers", "run_drain", "run_leader", "run_partition"]


def _throttle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--throttle",
        type=int,
        default=0,
        metavar="BYTES_PER_S",
        help="what a leader sends each new replica at most (default 0: no limit)",
    )
    parser.add_argument("--wait", action="store_true", help="return once every move is done")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")


def add_parsers(commands: Any, add_bootstrap: Callable[[argparse.ArgumentParser], None]) -> None:
    partition = commands.add_parser("partition", help="reassign partitions, list the moves")
    partition_commands = partition.add_subparsers(dest="partition_command", required=True)
    reassign = partition_commands.add_parser(
        "reassign", help="move partitions to the replicas a plan names (kafka-reassign JSON)"
    )
    reassign.add_argument("--plan", required=True, help="the plan file (- for stdin)")
    reassign.add_argument("--cancel", action="store_true", help="cancel the plan's moves")
    _throttle(reassign)
    ongoing = partition_commands.add_parser("reassignments", help="the moves in progress")
    ongoing.add_argument("--topic", action="append", help="repeatable; default every topic")
    ongoing.add_argument("--json", action="store_true")
    leader = commands.add_parser("leader", help="leader elections")
    leader_commands = leader.add_subparsers(dest="leader_command", required=True)
    elect = leader_commands.add_parser(
        "elect", help="--preferred: leaders back to first replicas; else leaderless partitions"
    )
    elect.add_argument("--preferred", action="store_true")
    elect.add_argument("--topic", help="only this topic's partitions")
    elect.add_argument("--partition", type=int, action="append", help="with --topic; repeatable")
    for sub in (reassign, ongoing, elect):
        add_bootstrap(sub)


def add_drain(
    broker_commands: Any, add_bootstrap: Callable[[argparse.ArgumentParser], None]
) -> None:
    drain = broker_commands.add_parser(
        "drain", help="move every replica (and leadership) off a broker before retiring it"
    )
    drain.add_argument("broker_id", type=int)
    _throttle(drain)
    add_bootstrap(drain)


def _results(console: Console, results: Sequence[MoveResult], verb: str) -> int:
    failed = [r for r in results if r.error is not None]
    for r in failed:
        console.print(f"[red]{r.topic}-{r.partition}[/red]: {r.error}")
    console.print(
        f"{verb} {len(results) - len(failed)} partition(s)"
        + (f", [red]{len(failed)} refused[/red]" if failed else "")
    )
    return 1 if failed else 0


def _wait(args: argparse.Namespace, console: Console, admin: Any, topics: Sequence[str]) -> None:
    if args.wait:
        admin.wait_for_reassignments(topics, timeout_s=args.timeout)
        console.print("[green]every move is done[/green]")


def run_partition(args: argparse.Namespace, console: Console, admin: Any) -> int:
    if args.partition_command == "reassignments":
        moves = admin.list_reassignments(args.topic or ())
        if args.json:
            console.print_json(json.dumps([_move(m) for m in moves]))
            return 0
        if not moves:
            console.print("no reassignment in progress")
            return 0
        table = Table(title="reassignments in progress")
        for column in ("partition", "replicas", "adding", "removing", "isr", "leader", "throttle"):
            table.add_column(column)
        for m in moves:
            table.add_row(
                f"{m.topic}-{m.partition}",
                *(",".join(map(str, x)) for x in (m.replicas, m.adding, m.removing, m.isr)),
                str(m.leader),
                f"{m.throttle_bytes_per_s:,} B/s" if m.throttle_bytes_per_s else "-",
            )
        console.print(table)
        return 0
    text = Path("/dev/stdin" if args.plan == "-" else args.plan).read_text()
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        console.print(f"[red]error:[/red] {args.plan}: {exc}")
        return 2
    if args.cancel:
        plan = dict.fromkeys(plan, ())
    results = admin.reassign_partitions(plan, throttle_bytes_per_s=args.throttle)
    code = _results(console, results, "cancelled the moves of" if args.cancel else "moving")
    _wait(args, console, admin, sorted({t for t, _ in plan}))
    return code


def _move(m: Any) -> dict[str, Any]:
    return {
        "topic": m.topic,
        "partition": m.partition,
        "replicas": list(m.replicas),
        "adding": list(m.adding),
        "removing": list(m.removing),
        "isr": list(m.isr),
        "leader": m.leader,
        "throttle_bytes_per_s": m.throttle_bytes_per_s,
    }


def run_drain(args: argparse.Namespace, console: Console, admin: Any) -> int:
    results = admin.drain_broker(args.broker_id, throttle_bytes_per_s=args.throttle)
    code = _results(console, results, f"moving off broker {args.broker_id}:")
    _wait(args, console, admin, ())
    return code


def run_leader(args: argparse.Namespace, console: Console, admin: Any) -> int:
    if args.partition and not args.topic:
        console.print("[red]error:[/red] --partition needs --topic")
        return 2
    keys: list[tuple[str, int]] = []
    if args.topic:
        count = len(admin.describe_topic(args.topic).partitions)
        keys = [(args.topic, p) for p in (args.partition or range(count))]
    results = admin.elect_leaders(keys, preferred=args.preferred)
    return _results(console, results, "elected leaders for")
