"""``raftlog quorum``: the metadata quorum's voters from the command line.

    raftlog quorum describe [--json]                 # leader, term, voters, their lag
    raftlog quorum add-voter --id 4 --raft 10.0.0.4:9192 [--grpc 10.0.0.4:9092]
    raftlog quorum remove-voter 3

Replacing a dead voter: start the new machine's broker (its config names the old voters and has
``listen.raft``; it joins as an observer), ``add-voter`` it, then ``remove-voter`` the dead one.
A thin shell over ``Admin``'s quorum calls (``raftlog.client.quorum_admin``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["add_parsers", "run_quorum"]


def add_parsers(commands: Any, add_bootstrap: Callable[[argparse.ArgumentParser], None]) -> None:
    quorum = commands.add_parser("quorum", help="the metadata quorum: describe, add/remove voters")
    quorum_commands = quorum.add_subparsers(dest="quorum_command", required=True)
    describe = quorum_commands.add_parser("describe", help="leader, term and voters")
    describe.add_argument("--json", action="store_true")
    add = quorum_commands.add_parser(
        "add-voter", help="make a running broker a voter (one change at a time)"
    )
    add.add_argument("--id", type=int, required=True, dest="node_id", help="its broker id")
    add.add_argument("--raft", required=True, help="host:port its Raft member listens on")
    add.add_argument("--grpc", default="", help="its gRPC host:port (default: as registered)")
    add.add_argument("--timeout", type=float, default=30.0)
    remove = quorum_commands.add_parser("remove-voter", help="take a voter out of the quorum")
    remove.add_argument("node_id", type=int)
    remove.add_argument("--timeout", type=float, default=30.0)
    for sub in (describe, add, remove):
        add_bootstrap(sub)


def _print_voters(console: Console, voters: Any) -> None:
    console.print(
        "voters: " + ", ".join(f"{v.node_id} (raft {v.raft_address}, grpc {v.grpc_address})"
                               for v in voters)
    )  # fmt: skip


def run_quorum(args: argparse.Namespace, console: Console, admin: Any) -> int:
    if args.quorum_command == "add-voter":
        voters = admin.add_voter(args.node_id, args.raft, args.grpc, timeout_s=args.timeout)
        console.print(f"[green]broker {args.node_id} is a voter[/green]")
        _print_voters(console, voters)
        return 0
    if args.quorum_command == "remove-voter":
        voters = admin.remove_voter(args.node_id, timeout_s=args.timeout)
        console.print(f"[green]broker {args.node_id} is no longer a voter[/green]")
        _print_voters(console, voters)
        return 0
    answer = admin.describe_quorum()
    lag = {v.node_id: v.lag for v in answer.voters}
    if args.json:
        body = {
            "leader_id": answer.leader_id,
            "term": answer.term,
            "commit_index": answer.commit_index,
            "joining_voter": answer.joining_voter,
            "voters": [
                {
                    "node_id": v.node_id,
                    "raft_address": v.raft_address,
                    "grpc_address": v.grpc_address,
                    "lag": lag.get(v.node_id, -1),
                }
                for v in answer.members
            ],
            "raft_members": [v.node_id for v in answer.voters],
        }
        console.print_json(json.dumps(body))
        return 0
    table = Table(title=f"metadata quorum: leader {answer.leader_id}, term {answer.term}")
    for column in ("voter", "raft", "grpc", "lag"):
        table.add_column(column)
    for v in answer.members:
        entries = lag.get(v.node_id, -1)
        table.add_row(
            str(v.node_id) + (" (leader)" if v.node_id == answer.leader_id else ""),
            v.raft_address,
            v.grpc_address,
            "-" if entries < 0 else str(entries),
        )
    console.print(table)
    if answer.joining_voter >= 0:
        console.print(f"joining: broker {answer.joining_voter}")
    return 0
