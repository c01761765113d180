"""``raftlog chaos``: run a Jepsen-style test against a namespaced cluster, or re-check a run.

    raftlog chaos run [--nodes 3|5] [--nemesis partition,kill,pause,power-loss,disk,membership]
                      [--time-limit S] [--client grpc|kafka]
                      [--rate N] [--seed N] [--out DIR] [--unsafe] ...
    raftlog chaos check DIR

``client/cli.py`` hands everything after ``chaos`` to ``main`` here (imported lazily, so the
client never loads the harness). Exit codes: 0 valid (the checker found nothing and the final
drain read everything), 1 anomalies found, 2 bad usage or a machine that cannot run chaos (not
root, no ``ip netns``), 3 incomplete (no anomaly, but a drain could not finish), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from raftlog.client import RaftlogError

from .anomalies import render_summary
from .availability import availability
from .checker import check
from .history import HistoryFormatError, Op, load_jsonl
from .network import NetnsError, NetnsUnavailableError
from .report import availability_line
from .run_config import CLIENTS, RunConfig
from .runner import EXIT_ANOMALIES, EXIT_INCOMPLETE, EXIT_VALID, run
from .scenario import NO_FAULTS, UNCLEAN_SCENARIO, parse_nemeses
from .workload import PRODUCER_MODES

__all__ = ["main"]

EXIT_USAGE = 2


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX seconds, not {text!r}") from exc
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < MIN <= MAX, not {text!r}")
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftlog chaos",
        description="Jepsen-style chaos tests: brokers in network namespaces, faults, a checker.",
    )
    commands = parser.add_subparsers(dest="chaos_command", required=True, metavar="COMMAND")
    run_cmd = commands.add_parser(
        "run",
        help="run a workload under faults, drain, check (needs root and `ip netns`)",
        description=(
            "Producers (acks=all, unique values) and consumers run against a fresh cluster "
            "while nemeses inject faults; then every fault is healed, every partition drained "
            "through its leader and from every replica's disk, and the history checked. "
            "Exit 0 only when the checker finds nothing and the drain read everything."
        ),
    )
    run_cmd.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    run_cmd.add_argument(
        "--nemesis",
        default="partition,kill,pause",
        help=(
            "comma-separated: partition (every partition kind), kill, pause, power-loss (a "
            "minority loses power: unsynced writes dropped by a lazyfs mount under every data "
            "dir, then a reboot with a new boot id; needs /dev/fuse and libfuse 3), disk (a "
            "bit flip or truncation in a segment file of one node), membership (reassign a "
            "partition or drain a broker, the moves throttled so they overlap later faults; "
            "best with --nodes 5), any single nemesis "
            "(partition-halves, isolate-node, isolate-leaders, isolate-controller, "
            f"majorities-ring, bridge, combined), {UNCLEAN_SCENARIO} (the scripted "
            f"unclean-election scenario, alone) or {NO_FAULTS} (default: %(default)s)"
        ),
    )
    run_cmd.add_argument("--time-limit", type=float, default=60.0, help="seconds of workload")
    run_cmd.add_argument("--rate", type=float, default=100.0, help="sends per second, in total")
    run_cmd.add_argument("--seed", type=int, default=None, help="default: a random one")
    run_cmd.add_argument(
        "--out", type=Path, default=None, help="run folder (default .raftlog-chaos/<ts>-seed<n>)"
    )
    run_cmd.add_argument(
        "--unsafe",
        action="store_true",
        help="topic with unclean.leader.election.enable=true and min.insync.replicas=1 "
        "(Kafka 0.8's settings: the checker should find lost writes)",
    )
    run_cmd.add_argument(
        "--producer",
        choices=PRODUCER_MODES,
        default="once",
        help="once: one request per send, never retried (default); idempotent: retry each "
        "send with a producer id and sequence until acknowledged (the broker must store it "
        "once); retry: retry without a producer id (the checker should find duplicates)",
    )
    run_cmd.add_argument(
        "--drop-produce-responses",
        type=float,
        default=0.0,
        metavar="P",
        help="brokers drop this share of Produce answers after appending (a testing hook: "
        "the lost-answer case that retries must not turn into duplicates)",
    )
    run_cmd.add_argument(
        "--client",
        choices=CLIENTS,
        default="grpc",
        help="how the workload reaches the brokers: grpc, raftlog's own client (default); kafka, "
        "confluent-kafka (librdkafka: idempotent producer, acks=all; an assigning consumer) "
        "through a Kafka listener every broker gets in its namespace",
    )
    run_cmd.add_argument("--partitions", type=int, default=3)
    run_cmd.add_argument("--producers", type=int, default=4)
    run_cmd.add_argument("--consumers", type=int, default=2)
    run_cmd.add_argument(
        "--quiet", type=float, default=5.0, help="seconds after the final heal before the drain"
    )
    run_cmd.add_argument(
        "--fault-interval",
        type=_pair,
        default=(5.0, 10.0),
        metavar="MIN,MAX",
        help="quiet seconds before each fault (default 5,10)",
    )
    run_cmd.add_argument(
        "--fault-duration",
        type=_pair,
        default=(5.0, 15.0),
        metavar="MIN,MAX",
        help="seconds each fault lasts (default 5,15)",
    )
    run_cmd.add_argument(
        "--max-recovery-s",
        type=float,
        default=None,
        help="exit 4 if a partition takes longer than this to acknowledge again after a heal "
        "(or never does before the next fault)",
    )
    run_cmd.add_argument("--no-live", action="store_true", help="progress lines, no live view")
    check_cmd = commands.add_parser("check", help="re-check a run folder's history.jsonl")
    check_cmd.add_argument("dir", type=Path, help="a run folder (or a history.jsonl)")
    check_cmd.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return parser


def main(argv: Sequence[str], console: Console | None = None) -> int:
    console = console or Console()
    errors = Console(stderr=True)
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # --help, or argparse's own usage error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.chaos_command == "check":
        return _check(args, console, errors)
    try:
        config = RunConfig(
            nodes=args.nodes,
            nemeses=parse_nemeses(args.nemesis),
            time_limit_s=args.time_limit,
            rate_per_s=args.rate,
            seed=args.seed if args.seed is not None else secrets.randbelow(1_000_000),
            out_dir=args.out,
            unsafe=args.unsafe,
            partitions=args.partitions,
            producers=args.producers,
            consumers=args.consumers,
            quiet_s=args.quiet,
            fault_interval_s=args.fault_interval,
            fault_duration_s=args.fault_duration,
            live=not args.no_live,
            producer_mode=args.producer,
            client=args.client,
            drop_produce_responses=args.drop_produce_responses,
            max_recovery_s=args.max_recovery_s,
        )
        return run(config, console).exit_code
    except (ValueError, NetnsUnavailableError) as exc:
        errors.print(Text.assemble(("error: ", "red"), str(exc)))
        return EXIT_USAGE
    except (NetnsError, RaftlogError) as exc:  # the harness could not do its job
        errors.print(Text.assemble(("error: ", "red"), f"the chaos run could not go on: {exc}"))
        return EXIT_INCOMPLETE


def _check(args: argparse.Namespace, console: Console, errors: Console) -> int:
    path: Path = args.dir
    history = path / "history.jsonl" if path.is_dir() else path
    try:
        ops = load_jsonl(history)
    except (OSError, HistoryFormatError) as exc:
        errors.print(Text.assemble(("error: ", "red"), f"cannot read {history}: {exc}"))
        return EXIT_USAGE
    result = check(ops)
    avail = _availability_of(path, ops)
    if args.json:
        body = result.to_json()
        if avail is not None:
            body["availability"] = avail
        console.print_json(json.dumps(body))
    else:
        console.print(render_summary(result))
        if avail is not None:
            console.print(Text("availability: ").append(availability_line(avail)))
    return EXIT_VALID if result.valid else EXIT_ANOMALIES


def _availability_of(path: Path, ops: Sequence[Op]) -> dict[str, Any] | None:
    """Recoveries and silences, when the run folder's results.json says what the faults were."""
    results_file = path / "results.json" if path.is_dir() else path.with_name("results.json")
    try:
        results = json.loads(results_file.read_text())
        faults = [
            (
                str(f["name"]),
                float(f["start_s"]),
                None if f.get("stop_s") is None else float(f["stop_s"]),
            )
            for f in results["faults"]["records"]
        ]
        config = results["config"]
        keys = [f"{config['topic']}-{p}" for p in range(int(config["partitions"]))]
        end_s = float(config["time_limit_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return availability(ops, faults, keys, end_s).to_json()
