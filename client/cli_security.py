"""``raftlog acl|user|tls|whoami``: the security commands of the command line.

    raftlog tls init --dir /etc/raftlog/tls                      # the cluster CA (once)
    raftlog tls issue-broker 1 --host 10.0.0.1 --dir ...         # broker-1.pem/.key
    raftlog tls issue-client alice --dir ...                     # client-alice.pem/.key
    raftlog whoami                                               # the principal you are
    raftlog acl add --principal User:alice --topic orders --operation write
    raftlog acl add --principal User:alice --topic orders. --prefixed --operation read
    raftlog acl add --principal User:alice --group app --operation read
    raftlog acl add --principal User:ops --cluster --operation all
    raftlog acl add --principal User:* --topic secret --operation all --deny
    raftlog acl list [--principal ...] [--topic ...]
    raftlog acl remove --principal User:alice [--topic orders] [--operation write]
    raftlog user add alice          # reads the password from stdin (never from argv)
    raftlog user list / raftlog user remove alice

A thin shell over ``Admin``'s ACL and user calls and ``raftlog.client.certs``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from .acl_admin import Acl
from .certs import CertificateAuthority, CertificateError

__all__ = ["add_parsers", "run_acl", "run_tls", "run_user", "run_whoami"]

OPERATIONS = (
    "all",
    "read",
    "write",
    "create",
    "delete",
    "alter",
    "describe",
    "cluster_action",
    "describe_configs",
    "alter_configs",
    "idempotent_write",
)


def _resource_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    which = parser.add_mutually_exclusive_group(required=required)
    which.add_argument("--topic", help="a topic name (or prefix with --prefixed; * = every one)")
    which.add_argument("--group", help="a consumer group id (or prefix; * = every one)")
    which.add_argument("--cluster", action="store_true", help="the cluster resource")


def add_parsers(commands: Any, add_bootstrap: Callable[[argparse.ArgumentParser], None]) -> None:
    acl = commands.add_parser("acl", help="add, list and remove ACLs (Kafka's model)")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True)
    add = acl_commands.add_parser("add", help="allow (or --deny) an operation on a resource")
    add.add_argument("--principal", required=True, help="User:<name>, or User:* for everyone")
    _resource_arguments(add, required=True)
    add.add_argument("--operation", required=True, action="append", choices=OPERATIONS)
    add.add_argument("--prefixed", action="store_true", help="the name is a prefix")
    add.add_argument("--deny", action="store_true", help="a DENY rule (wins over any allow)")
    add.add_argument("--host", default="*")
    listing = acl_commands.add_parser("list", help="the ACLs (filtered by what is given)")
    remove = acl_commands.add_parser("remove", help="remove every ACL the filter matches")
    for sub in (listing, remove):
        sub.add_argument("--principal")
        _resource_arguments(sub, required=False)
        sub.add_argument("--operation", choices=OPERATIONS)
        sub.add_argument("--json", action="store_true")
    for sub in (add, listing, remove):
        add_bootstrap(sub)

    user = commands.add_parser("user", help="SCRAM users (salted hashes in the metadata)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    uadd = user_commands.add_parser("add", help="create or change a user; password from stdin")
    uadd.add_argument("name")
    uadd.add_argument(
        "--mechanism", default="SCRAM-SHA-256", choices=["SCRAM-SHA-256", "SCRAM-SHA-512"]
    )
    uadd.add_argument("--iterations", type=int, default=8192)
    ulist = user_commands.add_parser("list", help="users and their mechanisms")
    ulist.add_argument("--json", action="store_true")
    uremove = user_commands.add_parser("remove", help="delete a user")
    uremove.add_argument("name")
    for sub in (uadd, ulist, uremove):
        add_bootstrap(sub)

    whoami = commands.add_parser("whoami", help="the principal the cluster sees you as")
    add_bootstrap(whoami)

    tls = commands.add_parser("tls", help="make a cluster CA and its certificates")
    tls_commands = tls.add_subparsers(dest="tls_command", required=True)
    init = tls_commands.add_parser("init", help="the CA (ca.pem, ca.key); never replaced")
    issue_broker = tls_commands.add_parser("issue-broker", help="a broker's certificate")
    issue_broker.add_argument("node_id", type=int)
    issue_broker.add_argument(
        "--host", action="append", required=True, help="a name or IP clients dial (repeatable)"
    )
    issue_client = tls_commands.add_parser("issue-client", help="a client's certificate")
    issue_client.add_argument("name", help="the principal will be User:<name>")
    for sub in (init, issue_broker, issue_client):
        sub.add_argument("--dir", required=True, help="where the CA and certificates live")


def _resource(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if getattr(args, "cluster", False):
        return "cluster", "kafka-cluster"
    if getattr(args, "topic", None) is not None:
        return "topic", args.topic
    if getattr(args, "group", None) is not None:
        return "group", args.group
    return None, None


def _table(console: Console, acls: list[Acl], title: str) -> None:
    table = Table(title=title)
    for column in ("principal", "permission", "operation", "resource", "name", "pattern", "host"):
        table.add_column(column)
    for a in acls:
        table.add_row(
            a.principal,
            a.permission,
            a.operation,
            a.resource_type,
            a.resource_name,
            a.pattern_type,
            a.host,
        )
    console.print(table)


def run_acl(args: argparse.Namespace, console: Console, admin: Any) -> int:
    resource_type, name = _resource(args)
    if args.acl_command == "add":
        assert resource_type is not None and name is not None  # the group is required
        acls = [
            Acl(
                args.principal,
                resource_type,
                name,
                operation,
                permission="deny" if args.deny else "allow",
                pattern_type="prefixed" if args.prefixed else "literal",
                host=args.host,
            )
            for operation in args.operation
        ]
        admin.create_acls(acls)
        _table(console, acls, "added")
        return 0
    fields = {
        "principal": args.principal,
        "resource_type": resource_type,
        "resource_name": name,
        "operation": args.operation,
    }
    found = (
        admin.describe_acls(**fields) if args.acl_command == "list" else admin.delete_acls(**fields)
    )
    if args.json:
        import json
        from dataclasses import asdict

        console.print_json(json.dumps([asdict(a) for a in found]))
    else:
        _table(console, found, "ACLs" if args.acl_command == "list" else "removed")
    return 0


def run_user(args: argparse.Namespace, console: Console, admin: Any) -> int:
    if args.user_command == "add":
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            console.print("[red]error:[/red] give the password on stdin (one line)")
            return 2
        admin.upsert_user(args.name, password, mechanism=args.mechanism, iterations=args.iterations)
        console.print(f"user {args.name} set ({args.mechanism}, {args.iterations} iterations)")
        return 0
    if args.user_command == "remove":
        admin.delete_user(args.name)
        console.print(f"user {args.name} removed")
        return 0
    users = admin.describe_users()
    if args.json:
        import json

        console.print_json(
            json.dumps(
                [
                    {"user": u.user, "mechanism": u.mechanism, "iterations": u.iterations}
                    for u in users
                ]
            )
        )
        return 0
    table = Table(title="users")
    for column in ("user", "mechanism", "iterations"):
        table.add_column(column)
    for u in users:
        table.add_row(u.user, u.mechanism, str(u.iterations))
    console.print(table)
    return 0


def run_whoami(console: Console, admin: Any) -> int:
    me = admin.whoami()
    extra = f" (broker {me.broker_id})" if me.broker_id >= 0 else ""
    console.print(f"{me.principal}{extra}{' — super user' if me.super_user else ''}")
    return 0


def run_tls(args: argparse.Namespace, console: Console) -> int:
    ca = CertificateAuthority(args.dir)
    try:
        if args.tls_command == "init":
            existed = ca.exists()
            ca.create()
            console.print(
                f"CA {'kept' if existed else 'made'}: {ca.ca_file} (keep {ca.ca_key_file} safe)"
            )
            return 0
        if args.tls_command == "issue-broker":
            pair = ca.issue_broker(args.node_id, args.host)
        else:
            pair = ca.issue_client(args.name)
    except CertificateError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(f"wrote {pair.cert_file} and {pair.key_file}")
    return 0
