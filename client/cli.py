"""The ``raftlog`` command line: one entry point, ``--help`` everywhere.

A thin shell: it parses arguments and calls the library. Subcommands grow with the product;
today they are the storage tools (``raftlog storage dump|demo``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftlog",
        description="A Raft-replicated cluster of Kafka-style log brokers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    storage = commands.add_parser("storage", help="inspect and exercise the storage engine")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    dump = storage_commands.add_parser(
        "dump", help="print every batch of a partition directory (like kafka-dump-log)"
    )
    dump.add_argument("directory", help="a partition directory, e.g. data/orders-0")
    dump.add_argument("--records", action="store_true", help="also decode and print records")
    demo = storage_commands.add_parser(
        "demo", help="kill a writer mid-append with SIGKILL, recover the log, verify every record"
    )
    demo.add_argument("--dir", help="keep the demo log here instead of a temporary directory")
    demo.add_argument("--seconds", type=float, default=1.5, help="how long the writer runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if args.command == "storage":
        from raftlog.segments import tool

        if args.storage_command == "dump":
            return tool.dump(args.directory, records=args.records, console=console)
        return tool.demo(console, directory=args.dir, run_s=args.seconds)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects the rest


if __name__ == "__main__":
    sys.exit(main())
