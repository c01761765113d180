"""The ``raftlog`` command line: one entry point, ``--help`` everywhere.

A thin shell over the client library. Errors a person can act on (an unreachable cluster, an
unknown topic, too few brokers for the replication factor) print one line and exit non-zero —
never a traceback. The bootstrap address comes from ``--bootstrap``, else ``RAFTLOG_BOOTSTRAP``,
else the local cluster in ``./.raftlog`` (``raftlog cluster up``), else ``127.0.0.1:9092``.

Exit codes: 0 success, 1 the operation failed (an error from the cluster, a failed check),
2 bad usage or config.

``raftlog broker`` and ``raftlog chaos`` load the broker and the chaos harness lazily: the
client library itself never imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["main"]

DEFAULT_DIR = ".raftlog"


class CliError(Exception):
    """One line for the user; exit code 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---- helpers ---------------------------------------------------------------------------------


def _bootstrap(args: argparse.Namespace) -> str:
    given = getattr(args, "bootstrap", None)
    if given is not None:
        return _checked_bootstrap(str(given), "--bootstrap")
    env = os.environ.get("RAFTLOG_BOOTSTRAP")
    if env:
        return _checked_bootstrap(env, "RAFTLOG_BOOTSTRAP")
    state = Path(getattr(args, "dir", None) or DEFAULT_DIR) / "cluster.json"
    if state.exists():
        try:
            return _checked_bootstrap(str(json.loads(state.read_text())["bootstrap"]), str(state))
        except (OSError, ValueError, KeyError, TypeError, CliError):
            pass
    return "127.0.0.1:9092"


def _security(args: argparse.Namespace) -> Any:
    """TLS material: --plaintext; else --ca/--cert/--key (or $RAFTLOG_CA_FILE, $RAFTLOG_CERT_FILE,
    $RAFTLOG_KEY_FILE); else the local cluster's CA and admin certificate (--dir, ./.raftlog)."""
    from .security import ClientSecurity, SecurityConfigError

    if getattr(args, "plaintext", False):
        return ClientSecurity.plaintext()
    ca = getattr(args, "ca", None) or os.environ.get("RAFTLOG_CA_FILE")
    user = getattr(args, "user", None) or os.environ.get("RAFTLOG_USER")
    if user:
        password = os.environ.get("RAFTLOG_PASSWORD")
        if password is None:
            import getpass

            password = getpass.getpass(f"password of {user}: ")
        ca_file = ca or str(Path(getattr(args, "dir", None) or DEFAULT_DIR) / "tls" / "ca.pem")
        try:
            return ClientSecurity.with_password(ca_file, user, password)
        except SecurityConfigError as exc:
            raise CliError(f"{exc} (give --ca)", 2) from exc
    cert = getattr(args, "cert", None) or os.environ.get("RAFTLOG_CERT_FILE")
    key = getattr(args, "key_file", None) or os.environ.get("RAFTLOG_KEY_FILE")
    try:
        if ca:
            return ClientSecurity.from_files(ca, cert, key)
        directory = Path(getattr(args, "dir", None) or DEFAULT_DIR)
        return ClientSecurity.from_dir(directory)
    except SecurityConfigError as exc:
        raise CliError(
            f"{exc} (give --ca/--cert/--key, run `raftlog cluster up` here, "
            "or --plaintext for a plaintext cluster)",
            2,
        ) from exc


def _checked_bootstrap(value: str, where: str) -> str:
    """``host:port[,host:port...]`` or a usage error (exit 2) naming the bad entry."""
    entries = [e.strip() for e in value.split(",")]
    if not value.strip() or not all(entries):
        raise CliError(f"{where} is empty or has an empty entry: {value!r} (want host:port)", 2)
    for entry in entries:
        host, sep, port = entry.rpartition(":")
        if not sep or not host:
            raise CliError(f"{where}: {entry!r} is not host:port", 2)
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise CliError(f"{where}: {entry!r} has no valid port (1-65535)", 2)
    return ",".join(entries)


def _configs(pairs: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--config takes key=value, not {pair!r}", 2)
        out[key.strip()] = value.strip()
    return out


def _print_json(console: Console, body: Any) -> None:
    console.print_json(json.dumps(body, default=str))


def _add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        help="host:port[,host:port...] of any brokers (default: $RAFTLOG_BOOTSTRAP, "
        "then ./.raftlog's local cluster, then 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="a `raftlog cluster up` directory: its bootstrap and certificates (default .raftlog)",
    )
    tls = parser.add_argument_group("security (default: --dir's CA and admin certificate)")
    tls.add_argument("--ca", help="the cluster CA (PEM); or $RAFTLOG_CA_FILE")
    tls.add_argument("--cert", help="this client's certificate (PEM); or $RAFTLOG_CERT_FILE")
    tls.add_argument(
        "--key-file", dest="key_file", help="this client's private key; or $RAFTLOG_KEY_FILE"
    )
    tls.add_argument(
        "--user",
        help="a SCRAM user, for a password listener (password from $RAFTLOG_PASSWORD or a "
        "prompt); or $RAFTLOG_USER",
    )
    tls.add_argument(
        "--plaintext", action="store_true", help="no TLS (only for a plaintext cluster)"
    )


# ---- the parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftlog",
        description="A Raft-replicated cluster of Kafka-style log brokers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser(
        "broker", help="run one broker in the foreground (--config), or drain one"
    )
    broker.add_argument("--config", help="the broker's TOML config: run it")
    broker.add_argument("--log-level", default="INFO")
    broker_commands = broker.add_subparsers(dest="broker_command", metavar="drain")
    from .cli_partitions import add_drain
    from .cli_partitions import add_parsers as add_partition_parsers

    add_drain(broker_commands, _add_bootstrap)

    cluster = commands.add_parser("cluster", help="a local cluster of 1-9 brokers on loopback")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_commands.add_parser("up", help="start a local cluster in the background")
    up.add_argument("--nodes", type=int, default=3, help="1 to 9 (default 3)")
    up.add_argument(
        "--voters",
        type=int,
        default=None,
        help="how many of them form the metadata quorum (default 3, or all of a smaller "
        "cluster); the others observe it",
    )
    up.add_argument("--base-port", type=int, default=9092, help="gRPC port of node 1")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait until ready")
    up.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS, no authentication, no ACLs (default: mutual TLS with a CA made in --dir)",
    )
    for sub in (up,):
        sub.add_argument("--json", action="store_true", help="print the cluster as JSON")
    down = cluster_commands.add_parser("down", help="stop the local cluster's brokers")
    kill = cluster_commands.add_parser("kill", help="SIGKILL one broker of the local cluster")
    kill.add_argument("node", type=int)
    start = cluster_commands.add_parser("start", help="start one stopped broker again")
    start.add_argument("node", type=int)
    info = cluster_commands.add_parser("info", help="the local cluster's nodes and pids")
    info.add_argument("--json", action="store_true")
    for sub in (up, down, kill, start, info):
        sub.add_argument("--dir", default=DEFAULT_DIR, help="where the cluster lives")

    topic = commands.add_parser("topic", help="create, list, describe and delete topics")
    topic_commands = topic.add_subparsers(dest="topic_command", required=True)
    create = topic_commands.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=3)
    create.add_argument("--replication-factor", type=int, default=3)
    create.add_argument("--min-insync-replicas", type=int, default=None)
    create.add_argument("--config", action="append", metavar="KEY=VALUE", help="repeatable")
    listing = topic_commands.add_parser("list", help="list topics")
    listing.add_argument("--json", action="store_true")
    describe = topic_commands.add_parser("describe", help="partitions, leaders, ISRs, configs")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true")
    delete = topic_commands.add_parser("delete", help="delete a topic and its data")
    delete.add_argument("name")
    alter = topic_commands.add_parser("alter-config", help="set or delete topic configs")
    alter.add_argument("name")
    alter.add_argument("--set", action="append", metavar="KEY=VALUE")
    alter.add_argument("--delete", action="append", metavar="KEY")
    grow = topic_commands.add_parser("add-partitions", help="more partitions for a topic")
    grow.add_argument("name")
    grow.add_argument("--partitions", type=int, required=True, help="the new total")
    for sub in (create, listing, describe, delete, alter, grow):
        _add_bootstrap(sub)
    add_partition_parsers(commands, _add_bootstrap)
    from .cli_quorum import add_parsers as add_quorum_parsers

    add_quorum_parsers(commands, _add_bootstrap)

    produce = commands.add_parser(
        "produce", help="send stdin lines as records (bytes as they are, any encoding)"
    )
    produce.add_argument("topic")
    produce.add_argument("--acks", default="all", choices=["all", "1", "0"])
    keys = produce.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the same key for every record")
    keys.add_argument("--key-separator", help="split each line into KEY<sep>VALUE")
    produce.add_argument("--partition", type=int, default=None)
    produce.add_argument("--compression", default=None, help="none, gzip, snappy, lz4, zstd")
    produce.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_bootstrap(produce)

    consume = commands.add_parser("consume", help="print records of a topic")
    consume.add_argument("topic")
    where = consume.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true")
    where.add_argument("--offset", type=int, help="start at this offset (needs --partition)")
    consume.add_argument("--partition", type=int, default=None)
    consume.add_argument("--max-messages", type=int, default=None)
    consume.add_argument("--follow", action="store_true", help="keep waiting for new records")
    consume.add_argument("--timeout", type=float, default=2.0, help="idle seconds before exit")
    consume.add_argument("--json", action="store_true", help="one JSON object per record")
    consume.add_argument(
        "--group", help="consume as a member of this group: share partitions, resume and commit"
    )
    consume.add_argument(
        "--group-instance-id",
        help="a static member (KIP-345): restarted with the same id, it takes its partitions back",
    )
    consume.add_argument(
        "--cooperative",
        action="store_true",
        help="cooperative rebalancing (KIP-429): keep consuming through rebalances",
    )
    _add_bootstrap(consume)

    group = commands.add_parser(
        "group", help="consumer groups: list, describe, reset offsets, delete"
    )
    group_commands = group.add_subparsers(dest="group_command", required=True)
    glist = group_commands.add_parser("list", help="every group and its state")
    glist.add_argument("--json", action="store_true")
    gdescribe = group_commands.add_parser(
        "describe", help="members, assignment, committed and end offsets, lag per partition"
    )
    gdescribe.add_argument("group")
    gdescribe.add_argument("--json", action="store_true")
    reset = group_commands.add_parser(
        "reset-offsets", help="move an empty group's committed offsets of a topic"
    )
    reset.add_argument("group")
    reset.add_argument("--topic", required=True)
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true")
    target.add_argument("--to-latest", action="store_true")
    target.add_argument("--to-offset", type=int)
    reset.add_argument("--json", action="store_true")
    gdelete = group_commands.add_parser(
        "delete", help="delete empty groups with their committed offsets"
    )
    gdelete.add_argument("groups", nargs="+")
    gdelete.add_argument("--json", action="store_true")
    for sub in (glist, gdescribe, reset, gdelete):
        _add_bootstrap(sub)

    from .cli_security import add_parsers as add_security_parsers

    add_security_parsers(commands, _add_bootstrap)

    status = commands.add_parser("status", help="brokers, controller, partitions, lag")
    status.add_argument("--watch", action="store_true", help="refresh live")
    status.add_argument("--interval", type=float, default=1.0)
    status.add_argument("--json", action="store_true")
    _add_bootstrap(status)

    demo = commands.add_parser(
        "demo", help="start a 3-node cluster, kill a leader mid-stream, verify every record"
    )
    demo.add_argument("--dir", default=DEFAULT_DIR)
    demo.add_argument("--base-port", type=int, default=9092)
    demo.add_argument("--records", type=int, default=10_000, help="per phase (two phases)")
    demo.add_argument("--keep", action="store_true", help="leave the cluster running")

    storage = commands.add_parser("storage", help="inspect and exercise the storage engine")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    dump = storage_commands.add_parser(
        "dump", help="print every batch of a partition directory (like kafka-dump-log)"
    )
    dump.add_argument("directory", help="a partition directory, e.g. data/logs/orders-0")
    dump.add_argument("--records", action="store_true", help="also decode and print records")
    verify = storage_commands.add_parser(
        "verify",
        help="check every batch of partition directories offline (CRC, gaps, overlaps, epochs)",
    )
    verify.add_argument("directories", nargs="+", help="partition directories, e.g. data/logs/t-0")
    sdemo = storage_commands.add_parser(
        "demo", help="kill a writer mid-append with SIGKILL, recover the log, verify every record"
    )
    sdemo.add_argument("--dir", help="keep the demo log here instead of a temporary directory")
    sdemo.add_argument("--seconds", type=float, default=1.5, help="how long the writer runs")

    # load generators like Kafka's perf tools (raftlog.client.perf); `make bench` runs the suite
    bench = commands.add_parser("bench", help="performance: produce, consume, end-to-end latency")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    bproduce = bench_commands.add_parser(
        "produce", help="acks and throughput of a producer (like kafka-producer-perf-test)"
    )
    bproduce.add_argument("--num-records", type=int, default=1_000_000)
    bproduce.add_argument("--record-size", type=int, default=100, help="bytes per value")
    bproduce.add_argument(
        "--throughput", type=float, default=-1, help="records/s cap for the run; -1 unlimited"
    )
    bproduce.add_argument("--acks", default="all", choices=["all", "1", "0"])
    bproduce.add_argument("--batch-bytes", type=int, default=256 << 10)
    bproduce.add_argument("--linger-ms", type=int, default=5)
    bproduce.add_argument("--compression", default="none", help="none, gzip, snappy, lz4, zstd")
    bproduce.add_argument("--producers", type=int, default=1, help="producer processes")
    bproduce.add_argument("--duration", type=float, default=None, help="stop sending after s")
    bconsume = bench_commands.add_parser(
        "consume", help="a topic from the beginning (like kafka-consumer-perf-test)"
    )
    bconsume.add_argument("--num-records", type=int, default=None, help="default: all there is")
    bconsume.add_argument("--timeout", type=float, default=10.0, help="idle seconds before exit")
    be2e = bench_commands.add_parser("e2e", help="produce → consume latency at a fixed rate")
    be2e.add_argument("--num-records", type=int, default=10_000)
    be2e.add_argument("--throughput", type=float, default=1000, help="records/s")
    be2e.add_argument("--record-size", type=int, default=100, help="bytes per value (>= 16)")
    be2e.add_argument("--acks", default="all", choices=["all", "1", "0"])
    be2e.add_argument("--linger-ms", type=int, default=0)
    for sub in (bproduce, bconsume, be2e):
        sub.add_argument("--topic", required=True)
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
        _add_bootstrap(sub)

    # everything after `chaos` goes to raftlog.chaos.cli, which has its own --help (main() routes
    # it there before parsing); this entry only lists the command
    chaos = commands.add_parser(
        "chaos",
        add_help=False,
        help="Jepsen-style chaos tests in network namespaces: run, check (see `chaos --help`)",
    )
    chaos.add_argument("chaos_args", nargs=argparse.REMAINDER)
    return parser


# ---- commands ----------------------------------------------------------------------------------


def _cmd_broker(args: argparse.Namespace, console: Console) -> int:
    if args.broker_command == "drain":
        from .admin import Admin
        from .cli_partitions import run_drain

        with Admin(_bootstrap(args), security=_security(args)) as admin:
            return run_drain(args, console, admin)
    if not args.config:
        raise CliError("raftlog broker --config FILE runs a broker (or: raftlog broker drain N)", 2)
    from raftlog.cluster.__main__ import main as broker_main

    return broker_main(["--config", args.config, "--log-level", args.log_level])


def _cmd_partitions(args: argparse.Namespace, console: Console) -> int:
    from . import cli_partitions
    from .admin import Admin

    with Admin(_bootstrap(args), security=_security(args)) as admin:
        if args.command == "leader":
            return cli_partitions.run_leader(args, console, admin)
        return cli_partitions.run_partition(args, console, admin)


def _cmd_quorum(args: argparse.Namespace, console: Console) -> int:
    from .admin import Admin
    from .cli_quorum import run_quorum

    with Admin(_bootstrap(args), security=_security(args)) as admin:
        return run_quorum(args, console, admin)


def _cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    from .local_cluster import LocalCluster

    cluster = LocalCluster(args.dir)
    match args.cluster_command:
        case "up":
            if not args.json:
                console.print(f"starting {args.nodes} broker(s) in {cluster.dir} …")
            cluster.up(
                args.nodes,
                args.base_port,
                timeout_s=args.timeout,
                plaintext=args.plaintext,
                voters=args.voters,
            )
            if args.json:
                _print_json(console, cluster.to_json())
            else:
                console.print(f"[green]ready[/green]: bootstrap {cluster.bootstrap}")
                metrics = [f"http://{n.metrics}/metrics" for n in cluster.nodes.values()]
                console.print(f"metrics: {' '.join(metrics)}", highlight=False)
        case "down":
            stopped = cluster.down()
            console.print(f"stopped {len(stopped)} broker(s)" if stopped else "nothing running")
        case "kill":
            cluster.kill(args.node)
            console.print(f"killed broker {args.node} (SIGKILL)")
        case "start":
            cluster.start(args.node)
            console.print(f"broker {args.node} is back")
        case "info":
            body = cluster.to_json()
            if args.json:
                _print_json(console, body)
            else:
                for b in body["brokers"]:  # type: ignore[attr-defined]
                    state = f"pid {b['pid']}" if b["pid"] else "[red]stopped[/red]"
                    url = f"  {b['metrics_url']}" if b["metrics_url"] else ""
                    console.print(f"broker {b['id']}  {b['address']}  {state}{url}")
    return 0


def _cmd_topic(args: argparse.Namespace, console: Console) -> int:
    from .admin import Admin

    with Admin(_bootstrap(args), security=_security(args)) as admin:
        match args.topic_command:
            case "create":
                topic_id = admin.create_topic(
                    args.name,
                    args.partitions,
                    args.replication_factor,
                    min_insync_replicas=args.min_insync_replicas,
                    configs=_configs(args.config),
                )
                console.print(f"created topic {args.name} (id {topic_id})")
            case "list":
                names = admin.list_topics()
                if args.json:
                    _print_json(console, names)
                else:
                    for name in names:
                        console.print(name)
            case "describe":
                topic = admin.describe_topic(args.name)
                configs = admin.describe_configs(args.name)
                if args.json:
                    body = {
                        "name": topic.name,
                        "topic_id": topic.topic_id,
                        "replication_factor": topic.replication_factor,
                        "partitions": [
                            {
                                "partition": p.partition,
                                "leader": p.leader,
                                "leader_epoch": p.leader_epoch,
                                "replicas": list(p.replicas),
                                "isr": list(p.isr),
                            }
                            for p in topic.partitions
                        ],
                        "configs": {c.name: c.value for c in configs},
                    }
                    _print_json(console, body)
                else:
                    _print_topic(console, topic, configs)
            case "delete":
                admin.delete_topic(args.name)
                console.print(f"deleted topic {args.name}")
            case "alter-config":
                admin.alter_configs(args.name, _configs(args.set), args.delete or ())
                console.print(f"altered configs of {args.name}")
            case "add-partitions":
                admin.add_partitions(args.name, args.partitions)
                console.print(f"{args.name} has {args.partitions} partitions")
    return 0


def _print_topic(console: Console, topic: Any, configs: Any) -> None:
    table = Table(title=f"topic {topic.name} (id {topic.topic_id}, RF {topic.replication_factor})")
    for column in ("partition", "leader", "epoch", "replicas", "isr"):
        table.add_column(column, justify="right")
    for p in topic.partitions:
        out_of_sync = [r for r in p.replicas if r not in p.isr]
        isr = ",".join(map(str, p.isr)) + (
            f" [red](out: {','.join(map(str, out_of_sync))})[/red]" if out_of_sync else ""
        )
        leader = str(p.leader) if p.leader >= 0 else "[red]offline[/red]"
        table.add_row(
            str(p.partition), leader, str(p.leader_epoch), ",".join(map(str, p.replicas)), isr
        )
    console.print(table)
    explicit = [c for c in configs if not c.is_default]
    if explicit:
        console.print("configs: " + ", ".join(f"{c.name}={c.value}" for c in explicit))


def _cmd_produce(args: argparse.Namespace, console: Console) -> int:
    from .producer import Producer

    sent = failed = 0
    errors: dict[str, int] = {}
    last = None
    # bytes in, bytes out: a record is a line of stdin as it is (any encoding, or none), and
    # --key/--key-separator are taken as the bytes the shell passed (os.fsencode undoes
    # Python's surrogateescape decoding of argv)
    fixed_key = os.fsencode(args.key) if args.key is not None else None
    separator = os.fsencode(args.key_separator) if args.key_separator else None
    stdin = getattr(sys.stdin, "buffer", None)
    lines = stdin if stdin is not None else (os.fsencode(line) for line in sys.stdin)
    bootstrap = _bootstrap(args)
    with Producer(
        bootstrap, acks=args.acks, compression=args.compression, security=_security(args)
    ) as producer:
        futures = []
        for raw in lines:
            value = raw[:-1] if raw.endswith(b"\n") else raw
            key = fixed_key
            if separator is not None:
                k, sep, v = value.partition(separator)
                if sep:
                    key, value = k, v
            futures.append(producer.send(args.topic, value, key=key, partition=args.partition))
        producer.flush()
        for future in futures:
            error = future.exception()
            if error is None:
                sent += 1
                last = future.result()
            else:
                failed += 1
                errors[str(error)] = errors.get(str(error), 0) + 1
    if args.json:
        _print_json(console, {"acknowledged": sent, "failed": failed, "errors": errors})
    else:
        where = f" (last at {last.topic}-{last.partition}@{last.offset})" if last else ""
        console.print(f"{sent} record(s) acknowledged (acks={args.acks}){where}")
        for message, count in errors.items():
            console.print(f"[red]{count} failed:[/red] {message}")
    return 0 if failed == 0 else 1


def _cmd_consume(args: argparse.Namespace, console: Console) -> int:
    from .consumer import Consumer

    if args.offset is not None and args.partition is None:
        raise CliError("--offset needs --partition", 2)
    out = sys.stdout
    count = 0
    reset = "earliest" if args.from_beginning or args.offset is not None else "latest"
    if args.group and (args.partition is not None or args.offset is not None):
        raise CliError("--group shares partitions itself: drop --partition/--offset", 2)
    if not args.group and (args.group_instance_id or args.cooperative):
        raise CliError("--group-instance-id and --cooperative need --group", 2)
    extra: dict[str, Any] = {}
    if args.cooperative:
        extra["assignors"] = ("cooperative-sticky",)
    with Consumer(
        _bootstrap(args),
        auto_offset_reset=reset,
        group_id=args.group,
        group_instance_id=args.group_instance_id,
        security=_security(args),
        **extra,
    ) as consumer:
        if args.group:
            consumer.subscribe([args.topic])
        elif args.partition is not None:
            consumer.assign([(args.topic, args.partition)])
            if args.offset is not None:
                consumer.seek((args.topic, args.partition), args.offset)
        else:
            consumer.assign_topic(args.topic)
        idle_since = time.monotonic()
        while args.max_messages is None or count < args.max_messages:
            limit = 500 if args.max_messages is None else min(500, args.max_messages - count)
            joined = bool(consumer.assignment())
            records = consumer.poll(timeout_ms=500, max_records=limit)
            if args.group and not joined:
                # this poll joined the group (a new group's first round waits for more members,
                # Kafka's group.initial.rebalance.delay.ms): that was not idleness
                idle_since = time.monotonic()
            if not records:
                if not args.follow and time.monotonic() - idle_since > args.timeout:
                    break
                continue
            idle_since = time.monotonic()
            for r in records:
                value = r.value.decode(errors="replace") if r.value is not None else None
                if args.json:
                    key = r.key.decode(errors="replace") if r.key is not None else None
                    body = {
                        "partition": r.partition,
                        "offset": r.offset,
                        "key": key,
                        "value": value,
                        "timestamp_ms": r.timestamp_ms,
                    }
                    out.write(json.dumps(body) + "\n")
                else:
                    out.write(f"{value}\n")
                count += 1
            out.flush()
    if not args.json:
        print(f"{count} record(s)", file=sys.stderr)
    return 0


def _cmd_group(args: argparse.Namespace, console: Console) -> int:
    from .admin import Admin

    with Admin(_bootstrap(args), security=_security(args)) as admin:
        match args.group_command:
            case "list":
                groups = admin.list_groups()
                if args.json:
                    _print_json(
                        console, [{"group": g, "state": s, "members": n} for g, s, n in groups]
                    )
                else:
                    for g, state, n in groups:
                        console.print(f"{g}  {state}  {n} member(s)")
            case "describe":
                d = admin.describe_group(args.group)
                if args.json:
                    _print_json(
                        console,
                        {
                            "group": d.group_id,
                            "state": d.state,
                            "generation": d.generation,
                            "protocol": d.protocol,
                            "leader": d.leader_id,
                            "coordinator": d.coordinator_id,
                            "members": [
                                {
                                    "member_id": m,
                                    "client_id": c,
                                    "group_instance_id": d.instances.get(m),
                                    "partitions": [list(tp) for tp in parts],
                                }
                                for m, c, parts in d.members
                            ],
                            "offsets": [
                                {
                                    "topic": o.topic,
                                    "partition": o.partition,
                                    "committed": o.committed,
                                    "end_offset": o.end_offset,
                                    "lag": o.lag,
                                    "member_id": o.member_id,
                                }
                                for o in d.offsets
                            ],
                        },
                    )
                else:
                    _print_group(console, d)
            case "reset-offsets":
                to = "earliest" if args.to_earliest else "latest" if args.to_latest else "offset"
                done = admin.reset_group_offsets(
                    args.group, args.topic, to=to, offset=args.to_offset
                )
                if args.json:
                    _print_json(
                        console,
                        [
                            {"topic": t, "partition": p, "offset": o}
                            for (t, p), o in sorted(done.items())
                        ],
                    )
                else:
                    for (t, p), o in sorted(done.items()):
                        console.print(f"{t}-{p} → {o}")
            case "delete":
                results = admin.delete_groups(args.groups)
                if args.json:
                    _print_json(
                        console,
                        [
                            {"group": g, "error": None if e is None else e.name, "message":
                             None if e is None else e.message}
                            for g, e in results.items()
                        ],
                    )  # fmt: skip
                else:
                    for g, e in results.items():
                        console.print(f"{g}  deleted" if e is None else f"{g}  {e}")
                if any(e is not None for e in results.values()):
                    return 1
    return 0


def _print_group(console: Console, d: Any) -> None:
    console.print(
        f"group [bold]{d.group_id}[/bold] · {d.state} · generation {d.generation} · "
        f"assignor {d.protocol or '-'} · coordinator broker {d.coordinator_id}"
    )
    table = Table()
    for column in ("topic", "partition", "committed", "end", "lag", "member"):
        table.add_column(column, justify="right" if column != "member" else "left")
    for o in d.offsets:
        lag = "?" if o.lag < 0 else (f"[yellow]{o.lag:,}[/yellow]" if o.lag else "0")
        committed = "-" if o.committed < 0 else f"{o.committed:,}"
        end = "?" if o.end_offset < 0 else f"{o.end_offset:,}"
        member = o.member_id or "-"
        if o.member_id in d.instances:  # a static member: its instance id is what operators know
            member = f"{d.instances[o.member_id]} ({o.member_id})"
        table.add_row(o.topic, str(o.partition), committed, end, lag, member)
    console.print(table)


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from .admin import Admin
    from .status import render

    with Admin(_bootstrap(args), timeout_s=5.0, security=_security(args)) as admin:
        if args.json:
            _print_json(console, admin.status_snapshot().to_json())
            return 0
        if not args.watch:
            console.print(render(admin.status_snapshot(), width_hint=console.width))
            return 0
        from rich.live import Live

        with Live(
            render(admin.status_snapshot(), width_hint=console.width), console=console, screen=False
        ) as live:
            try:
                while True:
                    time.sleep(args.interval)
                    try:
                        live.update(render(admin.status_snapshot(), width_hint=console.width))
                    except Exception as exc:  # keep watching through a failover
                        console.print(f"[yellow]status: {exc}[/yellow]")
            except KeyboardInterrupt:
                return 0


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from .demo import run_demo

    return run_demo(console, args.dir, args.base_port, args.records, keep=args.keep)


def _cmd_storage(args: argparse.Namespace, console: Console) -> int:
    from raftlog.segments import tool

    if args.storage_command == "dump":
        return tool.dump(args.directory, records=args.records, console=console)
    if args.storage_command == "verify":
        return tool.verify(args.directories, console=console)
    return tool.demo(console, directory=args.dir, run_s=args.seconds)


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from .perf import run_command

    try:
        return run_command(args, _bootstrap(args), _security(args), console)
    except ValueError as exc:  # a spec out of bounds
        raise CliError(str(exc), 2) from exc


def _cmd_security(args: argparse.Namespace, console: Console) -> int:
    from . import cli_security
    from .admin import Admin

    if args.command == "tls":
        return cli_security.run_tls(args, console)
    with Admin(_bootstrap(args), security=_security(args)) as admin:
        if args.command == "acl":
            return cli_security.run_acl(args, console, admin)
        if args.command == "user":
            return cli_security.run_user(args, console, admin)
        return cli_security.run_whoami(console, admin)


def _cmd_chaos(args: argparse.Namespace, console: Console) -> int:
    from raftlog.chaos.cli import main as chaos_main

    return chaos_main(args.chaos_args, console)


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "broker": _cmd_broker,
    "cluster": _cmd_cluster,
    "topic": _cmd_topic,
    "produce": _cmd_produce,
    "consume": _cmd_consume,
    "status": _cmd_status,
    "group": _cmd_group,
    "demo": _cmd_demo,
    "storage": _cmd_storage,
    "chaos": _cmd_chaos,
    "bench": _cmd_bench,
    "acl": _cmd_security,
    "partition": _cmd_partitions,
    "leader": _cmd_partitions,
    "quorum": _cmd_quorum,
    "user": _cmd_security,
    "whoami": _cmd_security,
    "tls": _cmd_security,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["chaos"]:  # argparse cannot pass on a leading --help: route it ourselves
        args = argparse.Namespace(command="chaos", chaos_args=argv[1:])
    else:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # usage printed by argparse (2), or --help (0)
            return exc.code if isinstance(exc.code, int) else 2
    console = Console()
    errors = Console(stderr=True)
    from raftlog.proto.errors import RaftlogError

    from .local_cluster import LocalClusterError

    try:
        return _COMMANDS[args.command](args, console)
    except CliError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return exc.code
    except (RaftlogError, LocalClusterError) as exc:
        errors.print(f"[red]error:[/red] {_friendly(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a full disk, a directory we may not write, a closed stream
        errors.print(f"[red]error:[/red] {exc}")
        return 1
    except Exception as exc:  # never a traceback for a user; RAFTLOG_DEBUG=1 shows it
        if os.environ.get("RAFTLOG_DEBUG"):
            raise
        errors.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {exc} "
            "(set RAFTLOG_DEBUG=1 for the traceback)"
        )
        return 1


def _friendly(exc: Exception) -> str:
    """One line a person can act on."""
    from .errors import NoBrokersAvailableError

    if isinstance(exc, NoBrokersAvailableError):
        return (
            f"cannot reach the cluster ({exc.message.split(':', 1)[0]}); is it running? "
            "start one with `raftlog cluster up`, or pass --bootstrap"
        )
    name = getattr(exc, "name", "")
    if name == "INVALID_REPLICATION_FACTOR":
        return f"too few brokers for that replication factor: {exc}"
    if name == "UNKNOWN_TOPIC_OR_PARTITION":
        return f"unknown topic: {exc}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
